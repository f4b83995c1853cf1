"""Pillow's bicubic resize (``Image.resize(size, BICUBIC)``) on tensors, exactly: the resize dgm-eval's encoders run
on PIL images (DINOv2: 8-bit images, each pass rounded to uint8; MAE: each channel a float ``"F"`` image), as banded
matrix products on the device, so a batch is resized in one go without a round trip through PIL. The weights are
Pillow's own (support 2 × the scale on downscaling, a = -0.5, normalised per output pixel); the horizontal pass
runs first, as in Pillow ≤ 12.1 (Pillow 12.2+ runs the vertical pass first when the height shrinks much more than
the width). Pixel-identical to Pillow for 8-bit images, within 2 float32 steps for float images (tests).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import torch

_PRECISION_BITS = 22  # Pillow's fixed point for 8-bit images: 32 - 8 - 2
CHUNK_ELEMENTS = 1 << 24  # float64 elements resized at once (128 MB)


# -- Pillow's bicubic resize, on tensors -------------------------------------------------------------


def _bicubic(x: np.ndarray) -> np.ndarray:
    """Pillow's ``bicubic_filter`` (a = -0.5), the same float64 operations in the same order."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    far = (((x - 5) * x + 8) * x - 4) * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@functools.lru_cache(maxsize=64)
def pil_bicubic_weights(in_size: int, out_size: int) -> np.ndarray:
    """``(out_size, in_size)`` float64 matrix: Pillow's normalised bicubic weights for resizing one axis
    (``precompute_coeffs`` in Resample.c, box = the whole image), which its float (``"F"``) resize uses as they are."""
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
        out[xx, lo:hi] = w / total if total != 0.0 else w
    out.flags.writeable = False
    return out


@functools.lru_cache(maxsize=64)
def pil_bicubic_coefficients(in_size: int, out_size: int) -> np.ndarray:
    """``(out_size, in_size)`` integer-valued float64 matrix: Pillow's fixed-point bicubic weights for resizing
    one axis of an 8-bit image (:func:`pil_bicubic_weights` + ``normalize_coeffs_8bpc`` in Resample.c)."""
    w = pil_bicubic_weights(in_size, out_size)
    scaled = w * float(1 << _PRECISION_BITS)
    out = np.where(w < 0, np.trunc(-0.5 + scaled), np.trunc(0.5 + scaled))
    out.flags.writeable = False
    return out


def _fixed_point(acc: torch.Tensor) -> torch.Tensor:
    """Pillow's ``clip8((acc + 2^21) >> 22)``, on exact integer float64 sums."""
    half = float(1 << (_PRECISION_BITS - 1))
    return acc.add_(half).mul_(2.0**-_PRECISION_BITS).floor_().clamp_(0.0, 255.0)


Bands = list[tuple[int, int, int, int, torch.Tensor]]
_BAND = 16  # output pixels per matrix block


def band_matrices(n_in: int, n_out: int, device: torch.device, weights: Callable[[int, int], np.ndarray]) -> Bands:
    """Pillow's weights for one axis (``weights(n_in, n_out)``) cut into blocks of :data:`_BAND` output pixels, each
    with the input range it reads: (out start, out end, in start, in end, block). A dense product would multiply
    mostly zeros."""
    m = weights(n_in, n_out)
    out = []
    for o0 in range(0, n_out, _BAND):
        o1 = min(o0 + _BAND, n_out)
        used = np.flatnonzero(m[o0:o1].any(axis=0))
        i0, i1 = (int(used[0]), int(used[-1]) + 1) if used.size else (0, 1)
        out.append((o0, o1, i0, i1, torch.from_numpy(m[o0:o1, i0:i1].copy()).to(device)))
    return out


def _two_passes(
    images: torch.Tensor,
    size: tuple[int, int],
    cache: dict[tuple[int, int], Bands] | None,
    weights: Callable[[int, int], np.ndarray],
    store: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """Horizontal then vertical banded products in float64, each pass's sums stored as ``store`` stores them."""
    cache = {} if cache is None else cache

    def bands(n_in: int, n_out: int) -> Bands:
        if (n_in, n_out) not in cache:
            cache[(n_in, n_out)] = band_matrices(n_in, n_out, images.device, weights)
        return cache[(n_in, n_out)]

    x = images.to(torch.float64)
    h, w = size
    if x.shape[-1] != w:
        x = store(torch.cat([torch.matmul(x[..., i0:i1], k.T) for _, _, i0, i1, k in bands(x.shape[-1], w)], dim=-1))
    if x.shape[-2] != h:
        x = store(torch.cat([torch.matmul(k, x[..., i0:i1, :]) for _, _, i0, i1, k in bands(x.shape[-2], h)], dim=-2))
    return x


def pil_bicubic_resize(
    images: torch.Tensor, size: tuple[int, int], cache: dict[tuple[int, int], Bands] | None = None
) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` → float64 ``(B, C, h, w)`` of integers 0..255: Pillow's
    ``Image.resize((w, h), BICUBIC)`` of each 8-bit image, horizontal pass first (see the module docstring).
    Sums of uint8 × 23-bit integers stay below 2^53, so the float64 products are exact in any order."""
    return _two_passes(images, size, cache, pil_bicubic_coefficients, _fixed_point)


def pil_float_bicubic_resize(
    images: torch.Tensor, size: tuple[int, int], cache: dict[tuple[int, int], Bands] | None = None
) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` → float32 ``(B, C, h, w)``: Pillow's ``Image.resize((w, h), BICUBIC)`` of each channel
    as a float (``"F"``) image, horizontal pass first, each pass summed in float64 and stored as float32."""
    as_float32 = lambda x: x.to(torch.float32).to(torch.float64)  # noqa: E731
    return _two_passes(images, size, cache, pil_bicubic_weights, as_float32).to(torch.float32)
