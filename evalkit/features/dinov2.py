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

import functools
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
_PRECISION_BITS = 22  # Pillow's fixed point for 8-bit images: 32 - 8 - 2
_CHUNK_ELEMENTS = 1 << 24  # float64 elements resized at once (128 MB)


# -- Pillow's bicubic resize, on tensors -------------------------------------------------------------


def _bicubic(x: np.ndarray) -> np.ndarray:
    """Pillow's ``bicubic_filter`` (a = -0.5), the same float64 operations in the same order."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@functools.lru_cache(maxsize=64)
def pil_bicubic_coefficients(in_size: int, out_size: int) -> np.ndarray:
    """``(out_size, in_size)`` integer-valued float64 matrix: Pillow's fixed-point bicubic weights for resizing
    one axis (``precompute_coeffs`` + ``normalize_coeffs_8bpc`` in Resample.c, box = the whole image)."""
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    inv = 1.0 / filterscale
    out = np.zeros((out_size, in_size), dtype=np.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)  # C's (int) truncates toward zero, as int() does
        hi = min(int(center + support + 0.5), in_size)
        w = _bicubic((np.arange(lo, hi) - center + 0.5) * inv)
        total = 0.0
        for v in w.tolist():  # Pillow sums in order; np.sum's pairwise order could differ in the last bit
            total += v
        if total != 0.0:
            w = w / total
        scaled = w * float(1 << _PRECISION_BITS)
        out[xx, lo:hi] = np.where(w < 0, np.trunc(-0.5 + scaled), np.trunc(0.5 + scaled))
    out.flags.writeable = False
    return out


def _fixed_point(acc: torch.Tensor) -> torch.Tensor:
    """Pillow's ``clip8((acc + 2^21) >> 22)``, on exact integer float64 sums."""
    half = float(1 << (_PRECISION_BITS - 1))
    return acc.add_(half).mul_(2.0**-_PRECISION_BITS).floor_().clamp_(0.0, 255.0)


Bands = list[tuple[int, int, int, int, torch.Tensor]]
_BAND = 16  # output pixels per matrix block


def _bands(n_in: int, n_out: int, device: torch.device) -> Bands:
    """Pillow's coefficients cut into blocks of :data:`_BAND` output pixels, each with the input range it reads:
    (out start, out end, in start, in end, block). A dense product would multiply mostly zeros."""
    m = pil_bicubic_coefficients(n_in, n_out)
    out = []
    for o0 in range(0, n_out, _BAND):
        o1 = min(o0 + _BAND, n_out)
        used = np.flatnonzero(m[o0:o1].any(axis=0))
        i0, i1 = (int(used[0]), int(used[-1]) + 1) if used.size else (0, 1)
        out.append((o0, o1, i0, i1, torch.from_numpy(m[o0:o1, i0:i1].copy()).to(device)))
    return out


def pil_bicubic_resize(
    images: torch.Tensor, size: tuple[int, int], cache: dict[tuple[int, int], Bands] | None = None
) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` → float64 ``(B, C, h, w)`` of integers 0..255: Pillow's
    ``Image.resize((w, h), BICUBIC)`` of each image, horizontal pass first (see the module docstring).
    Sums of uint8 × 23-bit integers stay below 2^53, so the float64 products are exact in any order."""
    cache = {} if cache is None else cache

    def bands(n_in: int, n_out: int) -> Bands:
        if (n_in, n_out) not in cache:
            cache[(n_in, n_out)] = _bands(n_in, n_out, images.device)
        return cache[(n_in, n_out)]

    x = images.to(torch.float64)
    h, w = size
    if x.shape[-1] != w:
        x = torch.cat([torch.matmul(x[..., i0:i1], k.T) for _, _, i0, i1, k in bands(x.shape[-1], w)], dim=-1)
        x = _fixed_point(x)
    if x.shape[-2] != h:
        x = torch.cat([torch.matmul(k, x[..., i0:i1, :]) for _, _, i0, i1, k in bands(x.shape[-2], h)], dim=-2)
        x = _fixed_point(x)
    return x


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


def _weights_source(
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
        self.weights_path, self.weights_id = _weights_source(entry, weights, pretrained, seed)
        self.model = build_network(arch, self.weights_path, seed=seed, overrides=overrides).to(self.device)
        self._mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._coeffs: dict[tuple[int, int], Bands] = {}

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``(B, 3, H, W)`` → the float32 ``(B, 3, 224, 224)`` network input dgm-eval's transform gives."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 (B, 3, H, W) images, got {images.dtype} {tuple(images.shape)}")
        images = images.to(self.device)
        per = max(1, _CHUNK_ELEMENTS // max(1, images[0].numel()))  # bound the float64 copy of large images
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


def _overrides(embed_dim: int | None, depth: int | None, num_heads: int | None) -> dict[str, int]:
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
        over = _overrides(embed_dim, depth, num_heads)
        return Dinov2Extractor(name, device=device, weights=weights, pretrained=pretrained, seed=seed, overrides=over)

    build.__doc__ = f"{description}; ``embed_dim``/``depth``/``num_heads`` shrink it (tests)."
    return build


build_dinov2_vit_l14 = register_extractor("dinov2-vit-l14")(_factory("dinov2-vit-l14", "DINOv2 ViT-L/14 (1024-d)"))
build_dinov2_vit_b14 = register_extractor("dinov2-vit-b14")(_factory("dinov2-vit-b14", "DINOv2 ViT-B/14 (768-d)"))
