"""open_clip image and text encoders: ``image_embeds`` per image, and :meth:`ClipExtractor.encode_text`
for prompts (the runner stores those per sample as ``text_embeds``).

Any open_clip model name works. Weights, in order of precedence: ``weights=<file>`` (explicit; a
registered file is verified, another is marked ``custom:<sha256>``), ``pretrained=None`` (random,
``weights_id="random:<seed>"``), a registered (model, tag) pair such as ViT-B-32/openai (resolved and
verified through :mod:`evalkit.features.weights`), or any other open_clip tag, which open_clip resolves
itself (``weights_id="open_clip:<model>/<tag>"``, not hash-verified).

Embeddings are returned as the model gives them (not normalised); metrics normalise, as torchmetrics
``CLIPScore`` and the CMMD reference code do. Preprocessing is open_clip's own transform for the model.

``clip-vit-l14``: open_clip ``ViT-L-14`` with OpenAI's weights (``ViT-L-14.pt``, quick-GELU), the network of
the LAION aesthetic predictor and of FD_CLIP / CLIP score on ViT-L/14. Output ``image_embeds``: the projected
image embedding, (B, 768), unnormalised (``encode_image`` after open_clip's transform: bicubic resize of the
short side to 224, centre crop, OpenAI mean/std). ``{name: fd, extractor: clip-vit-l14}`` is FD on these.
Note dgm-eval's ``clip`` encoder (Stein et al. 2023) differs: DataComp-XL ViT-L-14 weights and the 1024-d
``ln_post`` token before the projection, so its FD_CLIP numbers are not comparable with these. With
``heads=("aesthetic",)`` it also returns ``aesthetic`` (B,) from the same embeddings
(:mod:`evalkit.features.aesthetic_head`), with one CLIP forward per image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.errors import ConfigError, DependencyError
from evalkit.features import aesthetic_head
from evalkit.features.base import register_extractor
from evalkit.features.safe_load import library_loader, load_state_dict, mismatch
from evalkit.features.weights import WeightsNotFoundError, file_sha256, resolve_weights

# (model, tag) → (weights registry entry, open_clip options that the tag would have implied)
REGISTERED = {
    ("ViT-B-32", "openai"): ("clip-vit-b-32-openai", {"force_quick_gelu": True}),
    ("ViT-L-14", "openai"): ("clip-vit-l14-openai", {"force_quick_gelu": True}),
}


def _weights_source(
    model: str, pretrained: str | None, weights: str | os.PathLike | None, seed: int
) -> tuple[str | None, str, bool, dict[str, Any]]:
    """(open_clip ``pretrained`` argument, weights_id, whether it is a local file, open_clip options)."""
    if weights is None and pretrained and os.path.isfile(os.path.expanduser(pretrained)):
        weights, pretrained = os.path.expanduser(pretrained), None  # a file given as the tag: custom weights
    entry, extra = REGISTERED.get((model, pretrained or ""), (None, {}))
    if weights is not None or entry is not None:
        resolved = resolve_weights(entry, weights) if entry else None
        if resolved is None:  # explicit file for a model evalkit has no registry entry for
            path = os.fspath(weights)  # type: ignore[arg-type]
            if not os.path.isfile(path):
                raise WeightsNotFoundError(f"weights file for clip model {model} not found at the given path {path}")
            return path, f"custom:{file_sha256(Path(path))}", True, extra
        return os.fspath(resolved.path), resolved.weights_id, True, extra
    if pretrained is None:
        return None, f"random:{seed}", False, extra
    return pretrained, f"open_clip:{model}/{pretrained}", False, extra


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
        heads: tuple[str, ...] = (),
        head_weights: dict[str, str | os.PathLike] | None = None,
    ) -> None:
        try:
            import open_clip
        except ImportError as err:
            raise DependencyError("the clip extractor needs open_clip: pip install open_clip_torch") from err
        self.name = name
        self.model_name = model
        self.device = torch.device(device)
        source, self.weights_id, local, extra = _weights_source(model, pretrained, weights, seed)
        with torch.random.fork_rng(devices=[]), safe_open_clip_loading():
            torch.manual_seed(seed)  # random init (pretrained=None) is reproducible from the seed
            try:
                self.model, _, self.preprocess = open_clip.create_model_and_transforms(
                    model, pretrained=source, device=self.device, **extra
                )
            except RuntimeError as err:  # open_clip's strict load_state_dict: the file is another model
                if not local:
                    raise
                raise mismatch(Path(source), f"open_clip model {model}", err) from err
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        self.mode = f"open_clip:{model}"
        self._load_heads(aesthetic_head.check_heads(name, heads), head_weights or {}, seed)

    def _load_heads(self, heads: tuple[str, ...], files: dict[str, str | os.PathLike], seed: int) -> None:
        """The optional heads (only ``aesthetic`` so far): random (seeded) where the CLIP weights are random and no
        file is given, else the registered file. Their weights ids go to :meth:`info`; ``weights_id`` stays CLIP's."""
        self.heads = heads  # the optional outputs it computes besides image_embeds
        self.head_nets: dict[str, aesthetic_head.AestheticMLP] = {}
        self.head_ids: dict[str, str] = {}
        dim = getattr(self.model.visual, "output_dim", None)
        if heads and dim != aesthetic_head.AESTHETIC_DIM:
            raise ConfigError(
                f"head 'aesthetic' takes {aesthetic_head.AESTHETIC_DIM}-d CLIP ViT-L/14 embeddings; "
                f"{self.model_name} gives {dim}-d"
            )
        random_seed = seed if self.weights_id.startswith("random:") else None
        for head in heads:
            self.head_nets[head], self.head_ids[head] = aesthetic_head.load_aesthetic(
                random_seed=random_seed, weights=files.get(head), device=self.device
            )
        self.outputs = ("image_embeds", *heads)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        from PIL import Image

        arr = images.cpu().numpy().transpose(0, 2, 3, 1)
        x = torch.stack([self.preprocess(Image.fromarray(np.ascontiguousarray(a))) for a in arr]).to(self.device)
        out = {"image_embeds": self.model.encode_image(x).float().cpu().numpy()}
        for head, mlp in self.head_nets.items():  # from the same embeddings: no second CLIP forward
            out[head] = aesthetic_head.aesthetic_scores(mlp, out["image_embeds"], self.device)
        return out

    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(list(prompts)).to(self.device)
        return self.model.encode_text(tokens).float().cpu().numpy()

    def info(self) -> dict[str, Any]:
        heads = {"heads": dict(self.head_ids)} if self.head_ids else {}
        return {"model": self.model_name, "weights_id": self.weights_id, **heads}


def _open_clip_state_dict(checkpoint_path: str, device: Any = "cpu", weights_only: bool = True) -> dict:
    """``open_clip.factory.load_state_dict`` without unpickling: the same unwrapping of a checkpoint, but the
    file is read by :func:`evalkit.features.safe_load.load_state_dict` whatever ``weights_only`` says."""
    state = load_state_dict(checkpoint_path)
    for key in ("input_resolution", "context_length", "vocab_size"):  # scalars of OpenAI's TorchScript files
        state.pop(key, None)
    if next(iter(state)).startswith("module"):
        state = {k[7:]: v for k, v in state.items()}
    return {k: v.to(device) for k, v in state.items()}


def safe_open_clip_loading():
    """Within the block every checkpoint open_clip loads (a ``pretrained`` file, hub or cache download, tower
    weights) goes through :func:`_open_clip_state_dict`, never ``torch.load`` of a pickle."""
    import open_clip.factory

    return library_loader(open_clip.factory, "load_state_dict", _open_clip_state_dict)


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


@register_extractor("clip-vit-l14")
def build_clip_l14(
    *,
    device: str | torch.device = "cpu",
    pretrained: str | None = "openai",
    weights: str | os.PathLike | None = None,
    seed: int = 0,
    heads: tuple[str, ...] = (),
    head_weights: dict[str, str | os.PathLike] | None = None,
    model: str = "ViT-L-14",
) -> ClipExtractor:
    """OpenAI CLIP ViT-L/14 (``image_embeds``, ``encode_text``); ``heads=("aesthetic",)`` adds the LAION aesthetic
    score. ``model`` other than ViT-L-14 is for tests (a tiny open_clip config with random weights)."""
    return ClipExtractor(
        model,
        pretrained,
        device=device,
        weights=weights,
        seed=seed,
        name="clip-vit-l14",
        heads=tuple(heads),
        head_weights=head_weights,
    )
