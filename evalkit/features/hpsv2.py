"""HPSv2 / HPSv2.1 (Wu et al. 2023, arXiv:2306.09341): an open_clip ViT-H-14 fine-tuned on human preference
choices. Outputs ``image_embeds`` (B, 1024) and, given prompts, ``hpsv2`` (B,): the cosine of each image's and its
prompt's embeddings, as ``hpsv2.score`` returns it (``diag(normalize(img) @ normalize(txt).T)``; the authors'
benchmark table reports 100 × the mean). :meth:`HPSv2Extractor.encode_text` gives the prompt embeddings, so
``clip_score`` can run on the same network.

Built as the ``hpsv2`` package builds it (``hpsv2/img_score.py``): open_clip ``ViT-H-14`` (here evalkit's installed
open_clip, not the package's vendored 2.16 copy: same architecture and state-dict keys), then the whole model
replaced by the checkpoint's ``state_dict`` (``HPS_v2.1_compressed.pt``, or ``HPS_v2_compressed.pt`` for
``version="2.0"``), so the laion2B weights the package downloads first are never needed. The checkpoint is a
``torch.save`` pickle: it is read with ``weights_only=True`` (:func:`evalkit.features.safe_load.load_state_dict`).

Preprocessing is the package's ``preprocess_val`` (``light_augmentation=True``): pixels to [0, 1], the longest side
resized to 224 (bicubic, torchvision's tensor resize with antialiasing, its default since torchvision 0.17), the
short side zero-padded (centred) to 224, then CLIP's mean/std. Where the longest side already is 224 the package
skips the padding too (a non-square image then fails in its ViT); here it is padded. The package runs under CUDA
autocast (fp16) on a GPU; this extractor runs in float32 everywhere (a GPU run of the package differs from it by
fp16 rounding; on a CPU the package runs in float32 too).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.errors import ConfigError, DependencyError
from evalkit.features.base import register_extractor
from evalkit.features.safe_load import load_state_dict, mismatch
from evalkit.features.weights import WeightsNotFoundError, file_sha256, resolve_weights

MODEL = "ViT-H-14"  # the architecture of both released checkpoints
VERSIONS = {"2.1": "hpsv2-v2.1", "2.0": "hpsv2-v2.0"}  # version → weights registry entry (evalkit.features.weights)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's OPENAI_DATASET_MEAN / STD, which hpsv2 uses
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def _version(version: str | float) -> str:
    key = str(version).lower().removeprefix("v")  # "2.1", "v2.1" and 2.1 alike
    if key not in VERSIONS:
        raise ConfigError(f"hpsv2: unknown version {version!r}; choose one of {', '.join(VERSIONS)}")
    return key


def _weights_source(
    version: str, model: str, pretrained: bool | None, weights: str | os.PathLike | None, seed: int
) -> tuple[Path | None, str]:
    """(checkpoint to load or None for a random network, weights_id)."""
    if weights is not None and model != MODEL:  # another architecture can never be a released checkpoint
        path = Path(os.path.expanduser(str(weights)))
        if not path.is_file():
            raise WeightsNotFoundError(f"weights file for hpsv2 ({model}) not found at the given path {path}")
        return path, f"custom:{file_sha256(path)}"
    if weights is not None or pretrained:
        if model != MODEL:
            raise ConfigError(f"hpsv2: released checkpoints are {MODEL}; for {model} pass weights= or pretrained=None")
        resolved = resolve_weights(VERSIONS[version], weights)
        return resolved.path, resolved.weights_id
    return None, f"random:{seed}"


def resize_longest_and_pad(x: torch.Tensor, size: int) -> torch.Tensor:
    """hpsv2's ``ResizeMaxSize`` on a float (B, 3, H, W) batch: longest side → ``size`` (bicubic, antialiased; the
    new sides rounded as Python's ``round``), then zeros around the short side, centred (extra pixel right/bottom)."""
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms import functional as TF

    h, w = x.shape[-2:]
    scale = size / float(max(h, w))
    if scale != 1.0:
        h, w = round(h * scale), round(w * scale)
        x = TF.resize(x, [h, w], interpolation=InterpolationMode.BICUBIC, antialias=True)
    pad_h, pad_w = size - h, size - w
    return torch.nn.functional.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2), value=0.0)


class HPSv2Extractor:
    takes_prompts = True
    outputs = ("image_embeds", "hpsv2")  # hpsv2 only where prompts are given

    def __init__(
        self,
        *,
        version: str = "2.1",
        model: str = MODEL,
        pretrained: bool | None = True,
        weights: str | os.PathLike | None = None,
        seed: int = 0,
        device: str | torch.device = "cpu",
        name: str = "hpsv2",
    ) -> None:
        try:
            import open_clip
        except ImportError as err:
            raise DependencyError("the hpsv2 extractor needs open_clip: pip install open_clip_torch") from err
        self.name, self.version, self.model_name = name, _version(version), model
        self.device = torch.device(device)
        path, self.weights_id = _weights_source(self.version, model, pretrained, weights, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # random init (pretrained=None) is reproducible from the seed
            self.model = open_clip.create_model(model, pretrained=None, precision="fp32", device="cpu")
        if path is not None:
            state = load_state_dict(path)  # {"state_dict": {...}, ...} unwrapped; weights_only, never a pickle
            state = {k.removeprefix("module."): v for k, v in state.items()}
            try:
                self.model.load_state_dict(state, strict=True)
            except RuntimeError as err:
                raise mismatch(path, f"an HPSv2 open_clip {model} state dict", err) from err
        self.model.to(self.device).eval()
        self.tokenizer = open_clip.get_tokenizer(model)
        size = self.model.visual.image_size
        self.resolution = int(max(size) if isinstance(size, (tuple, list)) else size)
        self.mode = f"hpsv2-v{self.version}:{model}"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) → the normalised (B, 3, 224, 224) float batch the package's ``preprocess_val`` gives."""
        x = images.to(self.device).float().div(255)  # torchvision ToTensor of the PIL image
        x = resize_longest_and_pad(x, self.resolution)
        mean = torch.tensor(OPENAI_MEAN, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_STD, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor, prompts: list[str] | None = None) -> dict[str, np.ndarray]:
        image = self.model.encode_image(self.preprocess(images)).float()
        out = {"image_embeds": image.cpu().numpy()}
        if prompts is not None:
            if len(prompts) != len(images):
                raise ValueError(f"{len(prompts)} prompts for {len(images)} images")
            text = self._encode(list(prompts))
            img_n = torch.nn.functional.normalize(image, dim=-1)
            txt_n = torch.nn.functional.normalize(text, dim=-1)
            out["hpsv2"] = (img_n * txt_n).sum(dim=-1).cpu().numpy()  # the diagonal of img_n @ txt_n.T
        return out

    def _encode(self, prompts: list[str]) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(prompts).to(self.device)).float()

    @torch.inference_mode()
    def encode_text(self, prompts: list[str]) -> np.ndarray:
        """(n, 1024) prompt embeddings, not normalised (``clip_score`` and ``hpsv2`` normalise)."""
        return self._encode(list(prompts)).cpu().numpy()

    def info(self) -> dict[str, Any]:
        return {"model": self.model_name, "version": self.version, "weights_id": self.weights_id}


@register_extractor("hpsv2")
def build_hpsv2(
    *,
    device: str | torch.device = "cpu",
    version: str = "2.1",
    weights: str | os.PathLike | None = None,
    pretrained: bool | None = True,
    model: str = MODEL,
    seed: int = 0,
) -> HPSv2Extractor:
    return HPSv2Extractor(
        version=version, model=model, pretrained=pretrained, weights=weights, seed=seed, device=device
    )
