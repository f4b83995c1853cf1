"""Paired pixel metrics: generated sample i against reference image i (image-to-image suites), as ``lpips_paired``.

They read the ``images`` output of the ``pixels`` extractor (the uint8 image as float in [0, 1], ``(N, 3, H, W)``).
Pairs: the first min(N_gen, N_ref) of each, in order; generated and reference images must have the same size.
Each row is the mean over pairs of a per-pair value (``per_sample``), computed with torchmetrics' functional API in
float64 with ``data_range=1``:

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

CIs: seeded percentile bootstrap over pairs (as ``lpips_paired``). Higher is better for all three.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from evalkit.metrics._common import MetricInputError, gen_array, option, ref_array
from evalkit.metrics.base import MetricContext, MetricDef, MetricInputs, MetricValue, register_metric
from evalkit.metrics.lpips import _resampling_problems
from evalkit.metrics.resampling import DEFAULT_RESAMPLES, bootstrap_mean_ci

KERNEL_SIZE = 11
SIGMA = 1.5
MS_SSIM_BETAS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # torchmetrics' default (Wang et al. 2003)
DEFAULT_MAX_DB = 100.0
CHUNK = 64  # pairs per torchmetrics call (bounds memory at large resolutions)

_COMMON_OPTIONS = {
    "read": "which extractor output to read (default images)",
    "bootstrap": "bootstrap resamples for the CI (0: none; default 1000)",
    "confidence": "CI level (default 0.95)",
}


def ms_ssim_min_size(kernel_size: int = KERNEL_SIZE, scales: int = len(MS_SSIM_BETAS)) -> int:
    """The smallest image side torchmetrics' MS-SSIM accepts (its own check, restated): 176 px by default."""
    return max(kernel_size * max(1, scales - 1) ** 2, 2**scales)


def paired_images(inputs: MetricInputs, metric: str) -> tuple[np.ndarray, np.ndarray]:
    """The first min(N_gen, N_ref) generated and reference images, float64 (n, C, H, W), checked to match."""
    key = option(inputs, "read", "images")
    gen, ref = gen_array(inputs, key, metric), ref_array(inputs, key, metric)
    if gen.ndim != 4 or ref.ndim != 4:
        raise MetricInputError(
            f"metric {metric!r} reads images (N, C, H, W) (the pixels extractor's output); got {key!r} of shapes "
            f"{gen.shape} (generated) and {ref.shape} (reference)"
        )
    if gen.shape[1:] != ref.shape[1:]:
        raise MetricInputError(
            f"metric {metric!r} compares generated image i with reference image i, so they need the same size; got "
            f"{'×'.join(map(str, gen.shape[1:]))} (generated) vs {'×'.join(map(str, ref.shape[1:]))} (reference)"
        )
    n = min(len(gen), len(ref))
    if n == 0:
        raise MetricInputError(f"metric {metric!r} needs at least one (generated, reference) pair; got none")
    return gen[:n].astype(np.float64, copy=False), ref[:n].astype(np.float64, copy=False)


def _chunked(fn: Callable[[Any, Any], Any], gen: np.ndarray, ref: np.ndarray) -> np.ndarray:
    import torch

    out = []
    for s in range(0, len(gen), CHUNK):
        g = torch.from_numpy(np.ascontiguousarray(gen[s : s + CHUNK]))
        r = torch.from_numpy(np.ascontiguousarray(ref[s : s + CHUNK]))
        out.append(fn(g, r).reshape(-1).numpy())
    return np.concatenate(out).astype(np.float64)


def psnr_terms(gen: np.ndarray, ref: np.ndarray, max_db: float = DEFAULT_MAX_DB) -> np.ndarray:
    """Per-pair PSNR in dB (data range 1), capped at ``max_db`` (identical pairs: +inf → ``max_db``)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    def one(g, r):
        return peak_signal_noise_ratio(g, r, data_range=1.0, reduction="none", dim=(1, 2, 3))

    return np.minimum(_chunked(one, gen, ref), float(max_db))


def ssim_terms(gen: np.ndarray, ref: np.ndarray) -> np.ndarray:
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_side(gen, KERNEL_SIZE, "ssim", f"its {KERNEL_SIZE}×{KERNEL_SIZE} window")

    def one(g, r):
        return structural_similarity_index_measure(
            g, r, gaussian_kernel=True, sigma=SIGMA, kernel_size=KERNEL_SIZE, data_range=1.0, reduction="none"
        )

    return _chunked(one, gen, ref)


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


def per_sample_psnr(inputs: MetricInputs) -> dict[str, np.ndarray]:
    gen, ref = paired_images(inputs, "psnr")
    return {"psnr": psnr_terms(gen, ref, float(option(inputs, "max_db", DEFAULT_MAX_DB)))}


def per_sample_ssim(inputs: MetricInputs) -> dict[str, np.ndarray]:
    gen, ref = paired_images(inputs, "ssim")
    return {"ssim": ssim_terms(gen, ref)}


def per_sample_ms_ssim(inputs: MetricInputs) -> dict[str, np.ndarray]:
    gen, ref = paired_images(inputs, "ms_ssim")
    kernel_size = int(option(inputs, "kernel_size", KERNEL_SIZE))
    return {"ms_ssim": ms_ssim_terms(gen, ref, kernel_size, tuple(option(inputs, "betas", MS_SSIM_BETAS)))}


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
    gen, ref = paired_images(inputs, "psnr")
    max_db = float(option(inputs, "max_db", DEFAULT_MAX_DB))
    terms = psnr_terms(gen, ref, max_db)
    identical = int(np.sum(np.all((gen == ref).reshape(len(gen), -1), axis=1)))
    return _mean_with_ci("psnr", terms, inputs, identical_pairs=identical, max_db=max_db)


def compute_ssim(inputs: MetricInputs) -> dict[str, MetricValue]:
    return _mean_with_ci("ssim", per_sample_ssim(inputs)["ssim"], inputs)


def compute_ms_ssim(inputs: MetricInputs) -> dict[str, MetricValue]:
    return _mean_with_ci("ms_ssim", per_sample_ms_ssim(inputs)["ms_ssim"], inputs)


def check_psnr(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    problems = _resampling_problems(options)
    cap = options.get("max_db", DEFAULT_MAX_DB)
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap < float("inf"):
        problems.append(f"option max_db: expected a positive finite number of dB (the cap per pair); got {cap!r}")
    return problems


def check_ssim(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    return _resampling_problems(options)


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


_DEFS = [
    ("psnr", compute_psnr, per_sample_psnr, check_psnr, {"max_db": "cap on each pair's PSNR in dB (default 100)"}),
    ("ssim", compute_ssim, per_sample_ssim, check_ssim, {}),
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
    "psnr": "PSNR (dB, data range 1) between generated sample i and reference image i, mean over pairs.",
    "ssim": "SSIM (Gaussian 11×11, σ 1.5) between generated sample i and reference image i, mean over pairs.",
    "ms_ssim": "MS-SSIM (5 scales, ≥ 176 px by default) between generated sample i and reference image i, mean.",
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
            description=_DESCRIPTIONS[_name],
            reference=f"torchmetrics {_REFERENCES[_name]}",
            paper=_PAPERS[_name],
        )
    )
