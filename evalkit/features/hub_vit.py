"""dgm-eval's ViT encoders as one extractor: a timm ViT at 224 px loaded from the checkpoint torch hub downloads,
images resized as Pillow resizes them (:mod:`evalkit.features.pil_resize`), divided by 255, normalised with the
ImageNet mean/std, and the CLS token after the final LayerNorm as ``features``. What differs between encoders — the
timm architecture, the resize (8-bit or float Pillow images), the checkpoint's layout — is a :class:`VitSpec`
(``dinov2-vit-l14``/``-b14`` in :mod:`evalkit.features.dinov2`, ``mae-vit-l16`` in :mod:`evalkit.features.mae`).

Weights: no sha256 is published for these checkpoints, so a file found in a search folder is taken as the standard
file (as torch hub does), an explicit ``weights=<file>`` is labelled ``custom:<sha256>``; ``pretrained=False``
builds random weights (``random:<seed>``); ``embed_dim``/``depth``/``num_heads`` shrink the network for tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.errors import DependencyError
from evalkit.features.base import register_extractor
from evalkit.features.pil_resize import CHUNK_ELEMENTS, Bands
from evalkit.features.safe_load import load_state_dict, mismatch
from evalkit.features.weights import get_entry, resolve_weights

RESOLUTION = 224  # dgm-eval's 224×224 input
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class VitSpec:
    name: str  # extractor name
    arch: str  # timm architecture
    entry: str  # weights registry entry
    resize: Callable[..., torch.Tensor]  # uint8 (B,3,H,W), (h, w), cache → float (B,3,h,w) in 0..255
    convert: Callable[[StateDict, torch.nn.Module], StateDict]  # checkpoint → the timm network's state dict
    mode: str  # recorded in every row
    weights_text: str  # what the file must hold, for the mismatch message
    timm_kwargs: dict[str, Any] = field(default_factory=dict)
    unwrap: tuple[str, ...] | None = None  # checkpoint keys holding the state dict (safe_load's default if None)


def hub_weights_source(
    entry: str, weights: str | os.PathLike | None, pretrained: bool, seed: int
) -> tuple[Path | None, str]:
    """(file to load or None for random weights, weights_id)."""
    if weights is None and not pretrained:
        return None, f"random:{seed}"
    resolved = resolve_weights(entry, weights)  # WeightsNotFoundError naming the file, its source and folders
    published = get_entry(entry)
    unverifiable = published.sha256 is None and published.sha256_prefix is None
    if weights is not None and unverifiable:  # nothing published to recognise the standard file by
        return resolved.path, f"custom:{resolved.sha256}"
    return resolved.path, resolved.weights_id


def build_network(
    spec: VitSpec, path: Path | None, *, seed: int = 0, overrides: dict[str, int] | None = None
) -> torch.nn.Module:
    """timm ``spec.arch`` at 224 px without a head, with the weights in ``path`` or random (``seed``)."""
    try:
        import timm
    except ImportError as err:
        raise DependencyError(f"the {spec.name} extractor needs timm: pip install timm") from err
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        kwargs = {**spec.timm_kwargs, **(overrides or {})}
        net = timm.create_model(spec.arch, pretrained=False, num_classes=0, img_size=RESOLUTION, **kwargs)
    if path is not None:
        raw = load_state_dict(path) if spec.unwrap is None else load_state_dict(path, unwrap=spec.unwrap)
        state = spec.convert(raw, net)
        try:
            net.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError, KeyError) as err:
            raise mismatch(path, f"{spec.weights_text} for timm {spec.arch}", err) from err
    return net.eval().requires_grad_(False)


class HubVitExtractor:
    """uint8 images → ``features``: the CLS token after the final norm, with dgm-eval's preprocessing."""

    outputs = ("features",)
    resolution = RESOLUTION

    def __init__(
        self,
        spec: VitSpec,
        *,
        device: str | torch.device = "cpu",
        weights: str | os.PathLike | None = None,
        pretrained: bool = True,
        seed: int = 0,
        overrides: dict[str, int] | None = None,
    ) -> None:
        self.spec, self.name, self.arch, self.mode = spec, spec.name, spec.arch, spec.mode
        self.device = torch.device(device)
        self.weights_path, self.weights_id = hub_weights_source(spec.entry, weights, pretrained, seed)
        self.model = build_network(spec, self.weights_path, seed=seed, overrides=overrides).to(self.device)
        self._mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._coeffs: dict[tuple[int, int], Bands] = {}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` → the float32 ``(B, 3, 224, 224)`` network input dgm-eval's transform gives."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 (B, 3, H, W) images, got {images.dtype} {tuple(images.shape)}")
        images = images.to(self.device)
        per = max(1, CHUNK_ELEMENTS // max(1, images[0].numel()))  # bound the float64 copy of large images
        out = torch.empty((images.shape[0], 3, RESOLUTION, RESOLUTION), dtype=torch.float32, device=self.device)
        for i in range(0, images.shape[0], per):
            out[i : i + per] = self.spec.resize(images[i : i + per], (RESOLUTION, RESOLUTION), self._coeffs)
        return out.clamp_(0.0, 255.0).div_(255.0).sub_(self._mean).div_(self._std)  # clip, ToTensor, Normalize

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        tokens = self.model.forward_features(self.preprocess(images))
        return {"features": tokens[:, 0].float().cpu().numpy()}

    def info(self) -> dict[str, Any]:
        return {"model": self.arch, "weights_id": self.weights_id, "resolution": RESOLUTION, "mode": self.mode}


def register_hub_vit(spec: VitSpec, description: str, module: str) -> Callable[..., HubVitExtractor]:
    """Register extractor ``spec.name`` as a part of ``module``, the module its name is declared in (the registry
    takes a declared name only from that module), and return the factory."""

    def build(
        *,
        device: str | torch.device = "cpu",
        weights: str | os.PathLike | None = None,
        pretrained: bool = True,
        seed: int = 0,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
    ) -> HubVitExtractor:
        given = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads}
        over = {k: int(v) for k, v in given.items() if v is not None}
        return HubVitExtractor(spec, device=device, weights=weights, pretrained=pretrained, seed=seed, overrides=over)

    build.__doc__ = f"{description}; ``embed_dim``/``depth``/``num_heads`` shrink it (tests)."
    build.__module__ = module
    return register_extractor(spec.name)(build)
