"""open_clip image and text encoders: ``image_embeds`` per image, and :meth:`ClipExtractor.encode_text`
for prompts (the runner stores those per sample as ``text_embeds``).

Any open_clip model name works. Weights, in order of precedence: ``weights=<file>`` (explicit; a
registered file is verified, another is marked ``custom:<sha256>``), ``pretrained=None`` (random,
``weights_id="random:<seed>"``), a registered (model, tag) pair such as ViT-B-32/openai (resolved and
verified through :mod:`evalkit.features.weights`), or any other open_clip tag, which open_clip resolves
itself (``weights_id="open_clip:<model>/<tag>"``, not hash-verified).

Embeddings are returned as the model gives them (not normalised); metrics normalise, as torchmetrics
``CLIPScore`` and the CMMD reference code do. Preprocessing is open_clip's own transform for the model.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from evalkit.errors import DependencyError
from evalkit.features.base import register_extractor
from evalkit.features.weights import resolve_weights

# (model, tag) → (weights registry entry, open_clip options that the tag would have implied)
REGISTERED = {("ViT-B-32", "openai"): ("clip-vit-b-32-openai", {"force_quick_gelu": True})}


class ClipExtractor:
    outputs = ("image_embeds",)
    mode = "open_clip"

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "openai",
        *,
        device: str | torch.device = "cpu",
        weights: str | os.PathLike | None = None,
        seed: int = 0,
        name: str = "clip",
    ) -> None:
        try:
            import open_clip
        except ImportError as err:
            raise DependencyError("the clip extractor needs open_clip: pip install open_clip_torch") from err
        self.name = name
        self.model_name = model
        self.device = torch.device(device)
        entry, extra = REGISTERED.get((model, pretrained or ""), (None, {}))
        if weights is not None or entry is not None:
            resolved = resolve_weights(entry, weights) if entry else None
            if resolved is None:  # explicit file for a model evalkit has no registry entry for
                from evalkit.features.weights import file_sha256

                path = os.fspath(weights)
                self.weights_id = f"custom:{file_sha256(path)}"  # type: ignore[arg-type]
            else:
                path, self.weights_id = os.fspath(resolved.path), resolved.weights_id
            source: str | None = path
        elif pretrained is None:
            source, self.weights_id = None, f"random:{seed}"
        else:
            source, self.weights_id = pretrained, f"open_clip:{model}/{pretrained}"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # random init (pretrained=None) is reproducible from the seed
            self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                model, pretrained=source, device=self.device, **extra
            )
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.mode = f"open_clip:{model}"

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        from PIL import Image

        arr = images.cpu().numpy().transpose(0, 2, 3, 1)
        x = torch.stack([self.preprocess(Image.fromarray(np.ascontiguousarray(a))) for a in arr]).to(self.device)
        return {"image_embeds": self.model.encode_image(x).float().cpu().numpy()}

    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(list(prompts)).to(self.device)
        return self.model.encode_text(tokens).float().cpu().numpy()

    def info(self) -> dict[str, Any]:
        return {"model": self.model_name, "weights_id": self.weights_id}


@register_extractor("clip")
def build_clip(
    *,
    device: str | torch.device = "cpu",
    model: str = "ViT-B-32",
    pretrained: str | None = "openai",
    weights: str | os.PathLike | None = None,
    seed: int = 0,
) -> ClipExtractor:
    return ClipExtractor(model, pretrained, device=device, weights=weights, seed=seed, name="clip")
