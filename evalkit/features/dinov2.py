"""DINOv2 ViT-L/14 and ViT-B/14 representations (``features``) as dgm-eval computes them for FD_DINOv2
(Stein et al. 2023, "Exposing flaws of generative model evaluation metrics"; layer6ai-labs/dgm-eval,
``dgm_eval/models/dinov2.py``). Every distribution metric (fd, kid, pr, fd_inf, vendi) reads ``features``.

The protocol, step by step (dgm-eval's choice → what evalkit runs):

1. Images are 8-bit RGB (``Image.open(path).convert("RGB")``): evalkit's uint8 ``(B, 3, H, W)`` batches.
2. ``transforms.Resize((224, 224), BICUBIC)`` on the PIL image: both sides to 224 px, aspect ratio not kept,
   no centre crop. On a PIL image that is Pillow's ``Image.resize``: bicubic (a = -0.5) whose support widens
   with the downscale factor (antialiased), in 8-bit fixed point, a horizontal pass rounded to uint8, then a
   vertical pass. :func:`pil_bicubic_resize` runs that arithmetic on tensors (Pillow's coefficients in its
   22-bit fixed point, rounding and clipping after each pass, as exact integer float64 matrix products) and
   gives the same pixels as Pillow ≤ 12.1, which dgm-eval's published numbers were computed with. Later
   Pillows run the vertical pass first in some cases, moving pixels by a few levels there: 12.2 for images
   over 100× taller than wide, 13.0 whenever the height shrinks by more than twice the pixels the width does
   (e.g. 400×256 (H×W) → 224×224; never for square images). evalkit keeps the horizontal-first order.
3. ``ToTensor`` (÷255 in float32) and ``Normalize`` with the ImageNet mean (0.485, 0.456, 0.406) and std
   (0.229, 0.224, 0.225), in float32, in that order.
4. ``torch.hub.load("facebookresearch/dinov2", "dinov2_vitl14")`` (``--arch vitb14``: B/14) in float32,
   eval mode. The feature is ``model(x)``: the CLS token after the final LayerNorm (``x_norm_clstoken``; the
   hub model's head is the identity), 1024-d (L/14) or 768-d (B/14), not L2-normalised.
5. The checkpoints' position embedding is for 518 px (37×37 patches). At 224 px (16×16) DINOv2 interpolates
   it on every forward: bicubic ``F.interpolate`` with ``scale_factor=(16 + 0.1) / 37`` (DINO's "+0.1"
   offset), ``align_corners=False``, no antialias, in float32. :func:`dinov2_pos_embed` computes that same
   embedding once at load time, and the network is timm's ``vit_large_patch14_dinov2`` /
   ``vit_base_patch14_dinov2`` built for 224 px with it. (timm's own resampling and transformers'
   ``Dinov2Model`` resize to ``size=(16, 16)`` without the offset: different features.)

Weights: the original checkpoints torch hub downloads (``dinov2_vitl14_pretrain.pth``,
``dinov2_vitb14_pretrain.pth``; registry entries in :mod:`evalkit.features.weights`), read without unpickling
(:func:`~evalkit.features.safe_load.load_state_dict`) and converted to timm's layout by timm's own converter
(``_convert_dinov2``); a timm-layout DINOv2 file loads too. Meta publishes no sha256: a file found in a search
folder is taken as the standard file (as torch hub does), an explicit ``weights=<file>`` is labelled
``custom:<sha256>``. ``pretrained=False`` builds random weights (``random:<seed>``, layer scale 1.0 as the
hub's ``pretrained=False``); ``embed_dim``/``depth``/``num_heads`` shrink the network for tests.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from evalkit.errors import DependencyError, WeightsError
from evalkit.features.base import register_extractor
from evalkit.features.pil_resize import CHUNK_ELEMENTS, Bands, pil_bicubic_resize
from evalkit.features.safe_load import load_state_dict, mismatch
from evalkit.features.weights import get_entry, resolve_weights

# extractor name → (timm architecture, weights registry entry)
NETS = {
    "dinov2-vit-l14": ("vit_large_patch14_dinov2", "dinov2-vitl14-pretrain"),
    "dinov2-vit-b14": ("vit_base_patch14_dinov2", "dinov2-vitb14-pretrain"),
}
WEIGHTS_ENTRY = {name: entry for name, (_, entry) in NETS.items()}
RESOLUTION = 224  # dgm-eval's Resize((224, 224))
PATCH = 14
POS_OFFSET = 0.1  # DINOv2's interpolate_offset
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# -- the position embedding ---------------------------------------------------------------------------


def dinov2_pos_embed(pos_embed: torch.Tensor, grid: int, offset: float = POS_OFFSET) -> torch.Tensor:
    """DINOv2's ``interpolate_pos_encoding`` for a ``grid``×``grid`` patch input: ``(1, 1 + M², D)`` →
    ``(1, 1 + grid², D)``, bicubic with ``scale_factor=(grid + offset) / M``, no antialias, in float32."""
    n = pos_embed.shape[1] - 1
    m = math.isqrt(n)
    if m * m != n:
        raise WeightsError(f"DINOv2 position embedding of {n} patches is not a square grid")
    if m == grid:
        return pos_embed
    pos = pos_embed.float()
    patch = pos[:, 1:].reshape(1, m, m, -1).permute(0, 3, 1, 2)
    scale = float(grid + offset) / m
    patch = F.interpolate(patch, scale_factor=(scale, scale), mode="bicubic", align_corners=False, antialias=False)
    if tuple(patch.shape[-2:]) != (grid, grid):
        raise WeightsError(f"DINOv2 position embedding interpolated to {tuple(patch.shape[-2:])}, not {grid}²")
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid * grid, -1)
    return torch.cat((pos[:, :1], patch), dim=1).to(pos_embed.dtype)


# -- the network and its weights ----------------------------------------------------------------------


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


def convert_checkpoint(state: dict[str, torch.Tensor], net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """An original DINOv2 (torch hub) or timm-layout state dict → ``net``'s: timm's ``_convert_dinov2`` for the
    names, then the position embedding interpolated to ``net``'s grid as DINOv2 does (:func:`dinov2_pos_embed`)."""
    from timm.models.vision_transformer import _convert_dinov2

    out = _convert_dinov2(dict(state), net) if "mask_token" in state else dict(state)
    if "pos_embed" in out:
        out["pos_embed"] = dinov2_pos_embed(out["pos_embed"], net.patch_embed.grid_size[0])
    return out


def build_network(
    arch: str, path: Path | None, *, seed: int = 0, overrides: dict[str, int] | None = None
) -> torch.nn.Module:
    """timm ``arch`` at 224 px, with the weights in ``path`` (original or timm layout) or random (``seed``)."""
    try:
        import timm
    except ImportError as err:
        raise DependencyError("the dinov2 extractors need timm: pip install timm") from err
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = timm.create_model(
            arch, pretrained=False, num_classes=0, img_size=RESOLUTION, init_values=1.0, **(overrides or {})
        )
    if path is not None:
        state = convert_checkpoint(load_state_dict(path), net)
        try:
            net.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError, KeyError) as err:
            raise mismatch(path, f"DINOv2 weights for timm {arch} (torch hub or timm layout)", err) from err
    return net.eval().requires_grad_(False)


class Dinov2Extractor:
    """uint8 images → ``features``: DINOv2's normalised CLS token at 224 px, dgm-eval's preprocessing."""

    outputs = ("features",)
    resolution = RESOLUTION
    mode = "dgm-eval"  # PIL bicubic to 224×224 (uint8), ImageNet normalisation, CLS after the final norm

    def __init__(
        self,
        name: str = "dinov2-vit-l14",
        *,
        device: str | torch.device = "cpu",
        weights: str | os.PathLike | None = None,
        pretrained: bool = True,
        seed: int = 0,
        overrides: dict[str, int] | None = None,
    ) -> None:
        arch, entry = NETS[name]
        self.name = name
        self.arch = arch
        self.device = torch.device(device)
        self.weights_path, self.weights_id = hub_weights_source(entry, weights, pretrained, seed)
        self.model = build_network(arch, self.weights_path, seed=seed, overrides=overrides).to(self.device)
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
            x = pil_bicubic_resize(images[i : i + per], (RESOLUTION, RESOLUTION), self._coeffs)
            out[i : i + per] = x
        return out.div_(255.0).sub_(self._mean).div_(self._std)  # ToTensor, then Normalize (float32)

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> dict[str, np.ndarray]:
        tokens = self.model.forward_features(self.preprocess(images))
        return {"features": tokens[:, 0].float().cpu().numpy()}

    def info(self) -> dict[str, Any]:
        return {"model": self.arch, "weights_id": self.weights_id, "resolution": RESOLUTION, "mode": self.mode}


def vit_overrides(embed_dim: int | None, depth: int | None, num_heads: int | None) -> dict[str, int]:
    given = {"embed_dim": embed_dim, "depth": depth, "num_heads": num_heads}
    return {k: int(v) for k, v in given.items() if v is not None}


def _factory(name: str, description: str) -> Callable[..., Dinov2Extractor]:
    def build(
        *,
        device: str | torch.device = "cpu",
        weights: str | os.PathLike | None = None,
        pretrained: bool = True,
        seed: int = 0,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
    ) -> Dinov2Extractor:
        over = vit_overrides(embed_dim, depth, num_heads)
        return Dinov2Extractor(name, device=device, weights=weights, pretrained=pretrained, seed=seed, overrides=over)

    build.__doc__ = f"{description}; ``embed_dim``/``depth``/``num_heads`` shrink it (tests)."
    return build


build_dinov2_vit_l14 = register_extractor("dinov2-vit-l14")(_factory("dinov2-vit-l14", "DINOv2 ViT-L/14 (1024-d)"))
build_dinov2_vit_b14 = register_extractor("dinov2-vit-b14")(_factory("dinov2-vit-b14", "DINOv2 ViT-B/14 (768-d)"))
