"""Paired pixel metrics: generated sample i against reference image i (image-to-image suites), as ``lpips_paired``;
in a task suite (``MetricInputs.source`` given) against sample i's own source image instead (no reference needed).

They read the ``images`` output of the ``pixels`` extractor (the uint8 image as float in [0, 1], ``(N, 3, H, W)``).
Pairs: each sample with its source (task suites: one source per sample, aligned), else the first min(N_gen, N_ref)
of each, in order; the two sides of a pair must have the same size. Each row is the mean over pairs of a per-pair
value (``per_sample``), computed with torchmetrics' functional API in float64 with ``data_range=1``:

- ``psnr`` (dB): per pair ``peak_signal_noise_ratio(..., data_range=1, reduction="none", dim=(1, 2, 3))``, i.e.
  10·log10(1 / MSE) over all channels and pixels of that pair, then the mean over pairs (not the PSNR of the pooled
  MSE). An identical pair has PSNR +inf; each pair's PSNR is capped at ``max_db`` (default 100 dB, far above any
  non-identical uint8 pair of up to ~1.7 Mpx, whose PSNR is at most 10·log10(255²·3HW)), so one copy cannot make the
  mean infinite; ``extra.identical_pairs`` counts them.
- ``ssim``: per pair ``structural_similarity_index_measure`` (Wang et al. 2004; Gaussian window 11 × 11, σ 1.5,
  k1 0.01, k2 0.03; torchmetrics reflect-pads the image by 5 px, so the SSIM map covers the whole image, averaged
  over channels and pixels), then the mean over pairs.
- ``ms_ssim``: per pair ``multiscale_structural_similarity_index_measure`` (Wang et al. 2003; default 5 scales with
  the paper's betas, kernel 11, σ 1.5, torchmetrics' ``normalize="relu"``), then the mean over pairs. Torchmetrics
  needs each side ≥ max(kernel_size · max(1, scales - 1)², 2^scales): 176 px with the defaults; smaller images are
  refused with that size, or set fewer ``betas`` (scales) or a smaller ``kernel_size``.

Inpainting (``MetricInputs.mask`` given, 1 = generated): ``psnr`` and ``ssim`` score option ``region``, by default
``unmasked`` (the pixels the model was to keep: a faithful inpainting reaches the cap there), or ``masked`` or
``whole``. On a region, PSNR is 10·log10(1 / MSE over that region's pixels and all channels) (torchmetrics' PSNR of
just those pixels) and SSIM the mean of torchmetrics' full SSIM map (computed on the whole image) over that region's
pixels and channels. ``ms_ssim`` and ``lpips_paired`` always score the whole image and refuse ``region``. In a task
suite ``extra`` records ``against`` (``source`` or ``reference``) and ``region``.

CIs: seeded percentile bootstrap over pairs (as ``lpips_paired``). Higher is better for all three.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from evalkit.metrics._common import MetricInputError, gen_array, option
from evalkit.metrics.base import MetricContext, MetricDef, MetricInputs, MetricValue, register_metric
from evalkit.metrics.lpips import _resampling_problems, partner_array, refuse_region, task_extra
from evalkit.metrics.resampling import DEFAULT_RESAMPLES, bootstrap_mean_ci

KERNEL_SIZE = 11
SIGMA = 1.5
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # torchmetrics' default (Wang et al. 2003)
DEFAULT_MAX_DB = 100.0
CHUNK = 64  # pairs per torchmetrics call (bounds memory at large resolutions)
REGIONS = ("unmasked", "masked", "whole")
_SSIM_ARGS = {"gaussian_kernel": True, "sigma": SIGMA, "kernel_size": KERNEL_SIZE, "data_range": 1.0}

_COMMON_OPTIONS = {
    "read": "which extractor output to read (default images)",
    "bootstrap": "bootstrap resamples for the CI (0: none; default 1000)",
    "confidence": "CI level (default 0.95)",
}


def ms_ssim_min_size(kernel_size: int = KERNEL_SIZE, scales: int = len(MS_SSIM_BETAS)) -> int:
    """The smallest image side torchmetrics' MS-SSIM accepts (its own check, restated): 176 px by default."""
    return max(kernel_size * max(1, scales - 1) ** 2, 2**scales)


def paired_images(inputs: MetricInputs, metric: str) -> tuple[np.ndarray, np.ndarray, str]:
    """The generated images and their partners (each sample's source in a task suite, else the first min(N_gen,
    N_ref) of each, in order), float64 (n, C, H, W), checked to match, and ``"source"`` or ``"reference"``."""
    key = option(inputs, "read", "images")
    gen = gen_array(inputs, key, metric)
    other, against = partner_array(inputs, key, metric)
    if gen.ndim != 4 or other.ndim != 4:
        raise MetricInputError(
            f"metric {metric!r} reads images (N, C, H, W) (the pixels extractor's output); got {key!r} of shapes "
            f"{gen.shape} (generated) and {other.shape} ({against})"
        )
    if gen.shape[1:] != other.shape[1:]:
        raise MetricInputError(
            f"metric {metric!r} compares generated image i with {against} image i, so they need the same size; got "
            f"{'×'.join(map(str, gen.shape[1:]))} (generated) vs {'×'.join(map(str, other.shape[1:]))} ({against})"
        )
    n = min(len(gen), len(other))
    if n == 0:
        raise MetricInputError(f"metric {metric!r} needs at least one (generated, {against}) pair; got none")
    return gen[:n].astype(np.float64, copy=False), other[:n].astype(np.float64, copy=False), against


def region_of(inputs: MetricInputs, metric: str) -> str:
    """The pixels psnr/ssim score: option ``region``, by default ``unmasked`` where the task has masks (the pixels
    the model was asked to keep), ``whole`` otherwise. Without masks (a task that has none) every region is whole."""
    region = inputs.options.get("region")
    if region is not None and region not in REGIONS:
        raise MetricInputError(f"metric {metric!r} option region: expected one of {', '.join(REGIONS)}; got {region!r}")
    if inputs.mask is None:
        return "whole"
    return region or "unmasked"


def region_weights(inputs: MetricInputs, region: str, gen: np.ndarray, metric: str) -> np.ndarray:
    """(n, 1, H, W) 0/1 float64: the pixels of ``region`` per pair (masks: 1 where the model generated)."""
    mask = np.asarray(inputs.mask)
    n, (h, w) = len(gen), gen.shape[-2:]
    if mask.ndim != 4 or mask.shape[1] != 1 or mask.shape[2:] != (h, w) or len(mask) < n:
        raise MetricInputError(
            f"metric {metric!r} needs one mask (N, 1, {h}, {w}) per sample (1 = generated); got shape {mask.shape} "
            f"for {n} samples"
        )
    generated = mask[:n] != 0
    weights = (generated if region == "masked" else ~generated).astype(np.float64)
    empty = np.flatnonzero(weights.reshape(n, -1).sum(axis=1) == 0)
    if empty.size:
        raise MetricInputError(
            f"metric {metric!r} region {region!r} holds no pixels in sample {int(empty[0])} (its mask is all "
            f"{'0' if region == 'masked' else '1'}); set option region: whole, or masks that leave both regions"
        )
    return weights


def torch_of(x: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(np.ascontiguousarray(x))


def _chunked(fn: Callable[[Any, Any], Any], gen: np.ndarray, ref: np.ndarray) -> np.ndarray:
    out = [fn(torch_of(gen[s : s + CHUNK]), torch_of(ref[s : s + CHUNK])) for s in range(0, len(gen), CHUNK)]
    return np.concatenate([o.reshape(-1).numpy() for o in out]).astype(np.float64)


def psnr_terms(gen: np.ndarray, ref: np.ndarray, max_db: float = DEFAULT_MAX_DB) -> np.ndarray:
    """Per-pair PSNR in dB (data range 1), capped at ``max_db`` (identical pairs: +inf → ``max_db``)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    def one(g, r):
        return peak_signal_noise_ratio(g, r, data_range=1.0, reduction="none", dim=(1, 2, 3))

    return np.minimum(_chunked(one, gen, ref), float(max_db))


def ssim_terms(gen: np.ndarray, ref: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Per-pair SSIM: the mean of torchmetrics' SSIM map over channels and pixels, or over the pixels where
    ``weights`` (n, 1, H, W) is 1 (the map is computed on the whole image, then averaged over the region)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_side(gen, KERNEL_SIZE, "ssim", f"its {KERNEL_SIZE}×{KERNEL_SIZE} window")

    if weights is None:
        return _chunked(
            lambda g, r: structural_similarity_index_measure(g, r, **_SSIM_ARGS, reduction="none"), gen, ref
        )
    out = []
    for s in range(0, len(gen), CHUNK):
        g, r = (torch_of(a[s : s + CHUNK]) for a in (gen, ref))
        _, ssim_map = structural_similarity_index_measure(g, r, **_SSIM_ARGS, reduction="none", return_full_image=True)
        out.append(_region_mean(ssim_map.numpy().astype(np.float64), weights[s : s + CHUNK]))
    return np.concatenate(out)


def _region_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per pair, the mean of (n, C, H, W) ``values`` over the channels and the pixels where ``weights`` is 1."""
    channels = values.shape[1]
    return (values * weights).sum(axis=(1, 2, 3)) / (weights.sum(axis=(1, 2, 3)) * channels)


def region_psnr_terms(gen: np.ndarray, ref: np.ndarray, weights: np.ndarray, max_db: float) -> np.ndarray:
    """Per-pair PSNR (data range 1) over the pixels where ``weights`` is 1: 10·log10(1 / MSE over those pixels and
    all channels), capped at ``max_db`` — torchmetrics' PSNR of just those pixels."""
    chunks = range(0, len(gen), CHUNK)
    mse = [_region_mean((gen[s : s + CHUNK] - ref[s : s + CHUNK]) ** 2, weights[s : s + CHUNK]) for s in chunks]
    return psnr_from_mse(np.concatenate(mse), max_db)


def psnr_from_mse(mse: np.ndarray, max_db: float = DEFAULT_MAX_DB) -> np.ndarray:
    """10·log10(1 / MSE) in dB for data range 1, capped at ``max_db`` (MSE 0: +inf → ``max_db``)."""
    with np.errstate(divide="ignore"):
        return np.minimum(10.0 * np.log10(1.0 / np.asarray(mse, dtype=np.float64)), float(max_db))


def ms_ssim_terms(
    gen: np.ndarray, ref: np.ndarray, kernel_size: int = KERNEL_SIZE, betas: Sequence[float] = MS_SSIM_BETAS
) -> np.ndarray:
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    betas = tuple(float(b) for b in betas)
    minimum = ms_ssim_min_size(kernel_size, len(betas))
    why = f"{len(betas)} scales (betas) with kernel_size {kernel_size}; set fewer betas or a smaller kernel_size"
    _check_side(gen, minimum, "ms_ssim", why)

    def one(g, r):
        return multiscale_structural_similarity_index_measure(
            g, r, sigma=SIGMA, kernel_size=kernel_size, data_range=1.0, betas=betas, reduction="none"
        )

    return _chunked(one, gen, ref)


def _check_side(images: np.ndarray, minimum: int, metric: str, why: str) -> None:
    h, w = images.shape[-2:]
    if min(h, w) < minimum:
        raise MetricInputError(
            f"metric {metric!r} needs images of at least {minimum}×{minimum} px ({why}); got {h}×{w}"
        )


def _psnr(inputs: MetricInputs) -> tuple[np.ndarray, dict[str, Any]]:
    """Per-pair PSNR of the region and the row's extra (pairs identical on the region, the cap, task fields)."""
    gen, other, against = paired_images(inputs, "psnr")
    max_db = float(option(inputs, "max_db", DEFAULT_MAX_DB))
    region = region_of(inputs, "psnr")
    if region == "whole":
        terms = psnr_terms(gen, other, max_db)
        identical = np.all((gen == other).reshape(len(gen), -1), axis=1)
    else:
        w = region_weights(inputs, region, gen, "psnr")
        terms = region_psnr_terms(gen, other, w, max_db)
        identical = np.all(((gen == other) | (w == 0)).reshape(len(gen), -1), axis=1)
    extra = {"identical_pairs": int(identical.sum()), "max_db": max_db, **task_extra(inputs, against, region)}
    return terms, extra


def _ssim(inputs: MetricInputs) -> tuple[np.ndarray, dict[str, Any]]:
    gen, other, against = paired_images(inputs, "ssim")
    region = region_of(inputs, "ssim")
    w = None if region == "whole" else region_weights(inputs, region, gen, "ssim")
    return ssim_terms(gen, other, w), task_extra(inputs, against, region)


def _ms_ssim(inputs: MetricInputs) -> tuple[np.ndarray, dict[str, Any]]:
    refuse_region(inputs, "ms_ssim")
    gen, other, against = paired_images(inputs, "ms_ssim")
    kernel_size = int(option(inputs, "kernel_size", KERNEL_SIZE))
    terms = ms_ssim_terms(gen, other, kernel_size, tuple(option(inputs, "betas", MS_SSIM_BETAS)))
    return terms, task_extra(inputs, against, "whole")


def per_sample_psnr(inputs: MetricInputs) -> dict[str, np.ndarray]:
    return {"psnr": _psnr(inputs)[0]}


def per_sample_ssim(inputs: MetricInputs) -> dict[str, np.ndarray]:
    return {"ssim": _ssim(inputs)[0]}


def per_sample_ms_ssim(inputs: MetricInputs) -> dict[str, np.ndarray]:
    return {"ms_ssim": _ms_ssim(inputs)[0]}


def _mean_with_ci(row: str, terms: np.ndarray, inputs: MetricInputs, **extra: Any) -> dict[str, MetricValue]:
    n = len(terms)
    out = MetricValue(float(terms.mean()), extra={"pairs": int(n), **extra})
    n_boot = int(option(inputs, "bootstrap", DEFAULT_RESAMPLES))
    if n_boot > 0 and n > 1:
        out.ci_low, out.ci_high = bootstrap_mean_ci(
            terms, n_resamples=n_boot, seed=inputs.seed, confidence=float(option(inputs, "confidence", 0.95))
        )
    return {row: out}


def compute_psnr(inputs: MetricInputs) -> dict[str, MetricValue]:
    terms, extra = _psnr(inputs)
    return _mean_with_ci("psnr", terms, inputs, **extra)


def compute_ssim(inputs: MetricInputs) -> dict[str, MetricValue]:
    terms, extra = _ssim(inputs)
    return _mean_with_ci("ssim", terms, inputs, **extra)


def compute_ms_ssim(inputs: MetricInputs) -> dict[str, MetricValue]:
    terms, extra = _ms_ssim(inputs)
    return _mean_with_ci("ms_ssim", terms, inputs, **extra)


def _region_problems(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    region = options.get("region")
    if region is None:
        return []
    if region not in REGIONS:
        return [f"option region: expected one of {', '.join(REGIONS)}; got {region!r}"]
    if region != "whole" and "masks" not in (ctx.conditions or {}):
        return [
            f"option region: {region} needs masks (conditions.masks, an inpaint task); set region: whole or drop it"
        ]
    return []


def check_psnr(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    problems = _resampling_problems(options) + _region_problems(options, ctx)
    cap = options.get("max_db", DEFAULT_MAX_DB)
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap < float("inf"):
        problems.append(f"option max_db: expected a positive finite number of dB (the cap per pair); got {cap!r}")
    return problems


def check_ssim(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    return _resampling_problems(options) + _region_problems(options, ctx)


def check_ms_ssim(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    problems = _resampling_problems(options)
    k = options.get("kernel_size", KERNEL_SIZE)
    if isinstance(k, bool) or not isinstance(k, int) or k < 3 or k % 2 == 0:
        problems.append(f"option kernel_size: expected an odd integer ≥ 3 (the Gaussian window); got {k!r}")
    betas = options.get("betas", MS_SSIM_BETAS)
    if (
        not isinstance(betas, (list, tuple))
        or not betas
        or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and b >= 0 for b in betas)
    ):
        problems.append(f"option betas: expected a non-empty list of numbers ≥ 0 (one weight per scale); got {betas!r}")
    return problems


_REGION = (
    "pixels scored where the task has masks (inpaint): unmasked (kept from the source), masked (generated) or whole "
    "(default unmasked where masks exist, whole otherwise)"
)
_DEFS = [
    (
        "psnr",
        compute_psnr,
        per_sample_psnr,
        check_psnr,
        {"max_db": "cap on each pair's PSNR in dB (default 100)", "region": _REGION},
    ),
    ("ssim", compute_ssim, per_sample_ssim, check_ssim, {"region": _REGION}),
    (
        "ms_ssim",
        compute_ms_ssim,
        per_sample_ms_ssim,
        check_ms_ssim,
        {
            "kernel_size": "Gaussian window size, odd (default 11)",
            "betas": "weight per scale; fewer scales allow smaller images (default torchmetrics' 5 betas)",
        },
    ),
]
_DESCRIPTIONS = {
    "psnr": "PSNR (dB, data range 1) between generated sample i and reference image i (task suites: its source; "
    "inpaint: the unmasked region), mean over pairs.",
    "ssim": "SSIM (Gaussian 11×11, σ 1.5) between generated sample i and reference image i (task suites: its "
    "source; inpaint: the unmasked region), mean over pairs.",
    "ms_ssim": "MS-SSIM (5 scales, ≥ 176 px by default) between generated sample i and reference image i (task "
    "suites: its source), whole image, mean.",
}
_REFERENCES = {
    "psnr": "PeakSignalNoiseRatio",
    "ssim": "StructuralSimilarityIndexMeasure",
    "ms_ssim": "MultiScaleStructuralSimilarityIndexMeasure",
}
_PAPERS = {"psnr": "", "ssim": "Wang et al. 2004", "ms_ssim": "Wang et al. 2003"}
for _name, _compute, _per_sample, _check, _extra in _DEFS:
    register_metric(
        MetricDef(
            name=_name,
            needs_reference=True,
            higher_is_better={_name: True},
            compute=_compute,
            per_sample=_per_sample,
            check=_check,
            options={
                "read": _COMMON_OPTIONS["read"],
                **_extra,
                **{k: v for k, v in _COMMON_OPTIONS.items() if k != "read"},
            },
            default_extractor="pixels",
            reads_source=True,
            description=_DESCRIPTIONS[_name],
            reference=f"torchmetrics {_REFERENCES[_name]}",
            paper=_PAPERS[_name],
        )
    )
