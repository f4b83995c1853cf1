"""Inpainting masks: seeded, per source index, so a cell's masks never depend on batch size or resume point.

A mask is uint8 ``(1, H, W)`` holding 0/1, **1 where the model generates** (diffusers' convention: white = repaint),
0 where it keeps the source. Kinds (``conditions.masks``):

- ``{kind: centre, size: 0.5}``: one centred box covering ``size`` of each side (a square on square images), the
  same for every index (the classic "centre crop" inpainting benchmark).
- ``{kind: boxes, count: 1, min_size: 0.2, max_size: 0.5, seed: 0}``: ``count`` axis-aligned boxes, each side drawn
  uniformly in ``[min_size, max_size]`` × that image side, placed uniformly inside the image.
- ``{kind: strokes, count: 3, width: 0.1, seed: 0}``: free-form brush strokes as LaMa / MAT / DeepFill v2 draw them:
  each a short random polyline (2–5 segments of 10–30 % of the shorter side, random turns) drawn with Pillow's
  ``ImageDraw.line(width=width × shorter side, joint="curve")`` and round caps at its ends.

The mask of source index ``i`` is drawn from ``np.random.default_rng([seed, i])`` alone (numpy's SeedSequence over
the pair), so it is the same whichever indices share a call.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from evalkit.errors import ConfigError
from evalkit.imageops.specs import check_named_spec

MASK_KINDS = ("centre", "boxes", "strokes")
# each kind's keys and their defaults (``kind`` itself aside)
MASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "centre": {"size": 0.5},
    "boxes": {"count": 1, "min_size": 0.2, "max_size": 0.5, "seed": 0},
    "strokes": {"count": 3, "width": 0.1, "seed": 0},
}
MAX_COUNT = 64  # boxes or strokes per mask: more would cover the image anyway
STROKE_SEGMENTS = (2, 5)  # segments per stroke, inclusive
STROKE_STEP = (0.1, 0.3)  # segment length, fraction of the shorter side


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _value_problem(key: str, x: Any) -> str | None:
    """What is wrong with one option's value (None: fine)."""
    if key in ("size", "min_size", "max_size", "width"):
        return None if _is_number(x) and 0 < x <= 1 else "expected a number in (0, 1]"
    if key == "count":
        return None if _is_int(x) and 1 <= x <= MAX_COUNT else f"expected an integer from 1 to {MAX_COUNT}"
    if key == "seed":
        return None if _is_int(x) and x >= 0 else "expected an integer ≥ 0"
    return None


def check_mask_spec(spec: Any, field: str = "conditions.masks") -> list[str]:
    """Every problem of a mask spec as a line naming the field (``conditions.masks.size: expected ...; got 2``);
    [] when it is fine. Never raises: the suite validator collects the lines."""
    problems, kind = check_named_spec(
        spec, field, "kind", MASK_DEFAULTS, _value_problem, "{kind: centre, size: 0.5}", "mask kind"
    )
    if kind is None:
        return problems
    lo, hi = spec.get("min_size", 0.2), spec.get("max_size", 0.5)
    if kind == "boxes" and _is_number(lo) and _is_number(hi) and lo > hi:
        problems.append(f"{field}.min_size: must not exceed max_size ({hi!r}); got {lo!r}")
    return problems


def make_masks(spec: dict[str, Any], indices: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8 ``(len(indices), 1, H, W)`` masks, 1 = generate, for source indices ``indices`` at ``size`` (H, W).

    Mask ``i`` depends only on (``spec``, ``i``, ``size``): byte-identical for every batch split."""
    problems = check_mask_spec(spec)
    if problems:
        raise ConfigError("; ".join(problems))
    h, w = (int(s) for s in size)
    if h < 1 or w < 1:
        raise ConfigError(f"mask size: expected a positive (height, width); got {tuple(size)}")
    idx = np.asarray(indices).reshape(-1)
    if idx.size and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0):
        raise ConfigError(f"mask indices: expected integers ≥ 0 (source indices); got {idx[:8].tolist()}")
    opts = {**MASK_DEFAULTS[spec["kind"]], **spec}
    draw = {"centre": _centre, "boxes": _boxes, "strokes": _strokes}[spec["kind"]]
    out = np.zeros((len(idx), 1, h, w), dtype=np.uint8)
    for j, i in enumerate(idx.tolist()):
        out[j, 0] = draw(opts, int(i), h, w)
    return out


def _rng(opts: dict[str, Any], i: int) -> np.random.Generator:
    return np.random.default_rng([int(opts["seed"]), i])


def _centre(opts: dict[str, Any], i: int, h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    bh, bw = max(1, round(opts["size"] * h)), max(1, round(opts["size"] * w))
    top, left = (h - bh) // 2, (w - bw) // 2
    m[top : top + bh, left : left + bw] = 1
    return m


def _boxes(opts: dict[str, Any], i: int, h: int, w: int) -> np.ndarray:
    rng, m = _rng(opts, i), np.zeros((h, w), dtype=np.uint8)
    lo, hi = float(opts["min_size"]), float(opts["max_size"])
    for _ in range(int(opts["count"])):
        bh = min(h, max(1, round(rng.uniform(lo, hi) * h)))
        bw = min(w, max(1, round(rng.uniform(lo, hi) * w)))
        top, left = int(rng.integers(0, h - bh + 1)), int(rng.integers(0, w - bw + 1))
        m[top : top + bh, left : left + bw] = 1
    return m


def _strokes(opts: dict[str, Any], i: int, h: int, w: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    rng, side = _rng(opts, i), min(h, w)
    width = max(1, round(float(opts["width"]) * side))
    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for _ in range(int(opts["count"])):
        x, y = rng.uniform(0, w - 1), rng.uniform(0, h - 1)
        angle = rng.uniform(0, 2 * math.pi)
        points = [(x, y)]
        for _ in range(int(rng.integers(STROKE_SEGMENTS[0], STROKE_SEGMENTS[1] + 1))):
            angle += rng.uniform(-math.pi / 2, math.pi / 2)  # a brush turns, it rarely doubles back
            step = rng.uniform(*STROKE_STEP) * side
            x = float(np.clip(x + step * math.cos(angle), 0, w - 1))
            y = float(np.clip(y + step * math.sin(angle), 0, h - 1))
            points.append((x, y))
        draw.line(points, fill=1, width=width, joint="curve")
        r = width / 2
        for px, py in (points[0], points[-1]):  # round caps, as a brush leaves
            draw.ellipse((px - r, py - r, px + r, py + r), fill=1)
    return np.asarray(img, dtype=np.uint8)


def binarize(images: np.ndarray) -> np.ndarray:
    """Masks given as image files, uint8 ``(N, C, H, W)`` → ``(N, 1, H, W)`` 0/1: 1 where the mean over channels
    exceeds 127 (white = generate). diffusers' mask processor binarises at 0.5 of [0, 1] (x / 255 ≥ 0.5, i.e.
    x > 127 for integers) after Pillow's luma conversion; for the usual gray or black/white masks the two agree."""
    x = np.asarray(images)
    if x.ndim != 4 or x.dtype != np.uint8:
        raise ConfigError(f"masks: expected uint8 images (N, C, H, W); got {x.dtype} of shape {x.shape}")
    return (x.astype(np.float64).mean(axis=1, keepdims=True) > 127).astype(np.uint8)


def mask_crops(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Each image cropped to the bounding box of its mask's 1 region and resized back to the image's size (Pillow
    bicubic, antialiased), so a feature network sees the regenerated part at its usual scale: uint8 (N, C, H, W) in,
    the same shape out. An empty mask keeps the whole image. Image by image: the same for every batch split."""
    from PIL import Image

    n, c, h, w = images.shape
    out = np.empty_like(images)
    for i in range(n):
        rows, cols = np.nonzero(masks[i, 0])
        box = (0, 0, w, h) if rows.size == 0 else (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        hwc = np.ascontiguousarray(images[i].transpose(1, 2, 0))
        pil = Image.fromarray(hwc[..., 0] if c == 1 else hwc)
        crop = np.asarray(pil.crop(tuple(int(v) for v in box)).resize((w, h), Image.BICUBIC))
        out[i] = crop[None] if c == 1 else crop.transpose(2, 0, 1)
    return out
