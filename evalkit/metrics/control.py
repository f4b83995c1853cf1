"""``control_fidelity``: does each generated image follow its control? The control's own detector
(:mod:`evalkit.imageops.detectors`) is applied to the output and the result compared with the control the model got
(``MetricInputs.control``, aligned with the samples). It reads the ``pixels`` extractor's ``images`` (uint8 / 255),
turned back into uint8 by round(x · 255), so the detector sees the very pixels the model produced.

- edge detectors (``canny``) → row ``control_f1``: per image, the F1 score between the output's edges
  (detector > 127) and the control's (first channel > 127), as ControlNet++ (Li et al. 2024) scores Canny control.
  Option ``tolerance`` (pixels, default 0): a predicted edge pixel is a true positive when a control edge pixel lies
  within Chebyshev distance ≤ tolerance, and a control edge pixel is recalled when a predicted one does; precision
  = TP_pred / |pred|, recall = TP_control / |control|, F1 = 2PR / (P + R) (0 where P + R = 0); both maps empty:
  1, one empty: 0.
- image detectors (``lowres``: low-resolution consistency of an upscaler; ``gray``) → row ``control_psnr``: per
  image PSNR (data range 1, over all pixels and channels) between detector(output) and the control, capped at
  ``max_db`` (default 100 dB) as :mod:`evalkit.metrics.paired` caps it.

Each row is the mean over images of those per-image terms (``per_sample``), with a seeded percentile bootstrap CI
over images. The detector is the suite's ``conditions.control`` one (``MetricInputs.control_spec``); where the
controls are files that name none, option ``detector`` says which detector made them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.imageops.detectors import DETECTORS, Detector, check_detector_spec, detect
from evalkit.metrics._common import MetricInputError, gen_array, option
from evalkit.metrics.base import MetricContext, MetricDef, MetricInputs, MetricValue, register_metric
from evalkit.metrics.lpips import _resampling_problems
from evalkit.metrics.paired import DEFAULT_MAX_DB, psnr_from_mse
from evalkit.metrics.resampling import DEFAULT_RESAMPLES, bootstrap_mean_ci

NAME = "control_fidelity"
ROWS = {"edges": "control_f1", "image": "control_psnr"}


def _as_spec(x: Any) -> dict[str, Any]:
    return {"detector": x} if isinstance(x, str) else dict(x)


def control_spec(inputs: MetricInputs) -> dict[str, Any]:
    """The detector spec that made the controls: ``inputs.control_spec``, else option ``detector`` (a name or a
    ``{detector: name, **options}`` mapping), for controls given as files."""
    if inputs.control_spec is not None:
        return dict(inputs.control_spec)
    given = option(inputs, "detector", None)
    if given is None:
        raise MetricInputError(
            f"metric {NAME!r}: the controls were given as files without a detector; set option detector (one of "
            f"{', '.join(DETECTORS)}) or conditions.control.detector to the detector that made them"
        )
    problems = detector_option_problems(given)
    if problems:
        raise MetricInputError(f"metric {NAME!r}: " + "; ".join(problems))
    return _as_spec(given)


def detector_option_problems(given: Any) -> list[str]:
    """What is wrong with option ``detector`` (a name, or a mapping {detector: name, **options})."""
    if isinstance(given, str):
        return [
            p.replace("option detector.detector:", "option detector:")
            for p in check_detector_spec(_as_spec(given), "option detector")
        ]
    return check_detector_spec(given, "option detector")


def output_images(inputs: MetricInputs) -> np.ndarray:
    """The generated images as uint8 (N, 3, H, W): the pixels extractor's x / 255 back to round(x · 255)."""
    key = option(inputs, "read", "images")
    x = gen_array(inputs, key, NAME)
    if x.ndim != 4 or x.shape[1] != 3:
        raise MetricInputError(
            f"metric {NAME!r} reads RGB images (N, 3, H, W) (the pixels extractor's output); got {key!r} of shape "
            f"{x.shape}"
        )
    if x.dtype == np.uint8:
        return x
    return np.clip(np.round(x.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def _controls(inputs: MetricInputs, n: int) -> np.ndarray:
    if inputs.control is None:
        raise MetricInputError(
            f"metric {NAME!r} compares each sample with its control, but none was given: the suite needs "
            "conditions.control (a detector such as {detector: canny}, or control files)"
        )
    c = np.asarray(inputs.control)
    if c.ndim != 4 or c.shape[1] != 3 or len(c) != n:
        raise MetricInputError(
            f"metric {NAME!r} needs one control (N, 3, h, w) per sample; got shape {c.shape} for {n} samples"
        )
    return c


def dilate(maps: np.ndarray, radius: int) -> np.ndarray:
    """Boolean (N, H, W) maps grown by a (2·radius + 1)² square: True where a True pixel lies within Chebyshev
    distance ≤ radius (a square is separable: rows, then columns)."""
    out = maps.astype(bool)
    for axis in (1, 2):
        grown = out.copy()
        size = out.shape[axis]
        for d in range(1, min(radius, size - 1) + 1):
            lo, hi = [slice(None)] * 3, [slice(None)] * 3
            lo[axis], hi[axis] = slice(0, size - d), slice(d, size)
            grown[tuple(lo)] |= out[tuple(hi)]
            grown[tuple(hi)] |= out[tuple(lo)]
        out = grown
    return out


def edge_f1(pred: np.ndarray, target: np.ndarray, tolerance: int = 0) -> np.ndarray:
    """Per-image F1 of boolean (N, H, W) edge maps with a Chebyshev ``tolerance`` (see the module docstring)."""
    n_pred, n_target = pred.sum(axis=(1, 2)), target.sum(axis=(1, 2))
    tp_pred = (pred & dilate(target, tolerance)).sum(axis=(1, 2))
    tp_target = (target & dilate(pred, tolerance)).sum(axis=(1, 2))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(n_pred > 0, tp_pred / np.maximum(n_pred, 1), 0.0)
        r = np.where(n_target > 0, tp_target / np.maximum(n_target, 1), 0.0)
        f1 = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1.0), 0.0)
    both_empty = (n_pred == 0) & (n_target == 0)
    return np.where(both_empty, 1.0, f1).astype(np.float64)


def control_terms(inputs: MetricInputs) -> tuple[str, np.ndarray, dict[str, Any]]:
    """The row this control gives (``control_f1`` or ``control_psnr``), its per-image terms and the row's extra."""
    spec = control_spec(inputs)
    problems = check_detector_spec(spec, "control")
    if problems:
        raise MetricInputError(f"metric {NAME!r}: " + "; ".join(problems))
    det: Detector = DETECTORS[spec["detector"]]
    out = output_images(inputs)
    control = _controls(inputs, len(out))
    seen = detect(spec, out)
    if seen.shape != control.shape:
        raise MetricInputError(
            f"metric {NAME!r}: detector {det.name} on the outputs gives {seen.shape[2:]} maps but the controls are "
            f"{control.shape[2:]}; the outputs must have the size the task implies"
        )
    extra: dict[str, Any] = {"detector": spec}
    if det.kind == "edges":
        tolerance = int(option(inputs, "tolerance", 0))
        extra["tolerance"] = tolerance
        return ROWS["edges"], edge_f1(seen[:, 0] > 127, control[:, 0] > 127, tolerance), extra
    max_db = float(option(inputs, "max_db", DEFAULT_MAX_DB))
    diff = (seen.astype(np.float64) - control.astype(np.float64)) / 255.0
    extra["max_db"] = max_db
    return ROWS["image"], psnr_from_mse((diff**2).reshape(len(diff), -1).mean(axis=1), max_db), extra


def per_sample_control_fidelity(inputs: MetricInputs) -> dict[str, np.ndarray]:
    row, terms, _ = control_terms(inputs)
    return {row: terms}


def compute_control_fidelity(inputs: MetricInputs) -> dict[str, MetricValue]:
    row, terms, extra = control_terms(inputs)
    out = MetricValue(float(terms.mean()), extra={"images": len(terms), **extra})
    n_boot = int(option(inputs, "bootstrap", DEFAULT_RESAMPLES))
    if n_boot > 0 and len(terms) > 1:
        out.ci_low, out.ci_high = bootstrap_mean_ci(
            terms, n_resamples=n_boot, seed=inputs.seed, confidence=float(option(inputs, "confidence", 0.95))
        )
    return {row: out}


def check_control_fidelity(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    """Before a run: the suite gives controls, and a detector for them (its own or option ``detector``)."""
    problems = _resampling_problems(options)
    tol = options.get("tolerance", 0)
    if isinstance(tol, bool) or not isinstance(tol, int) or tol < 0:
        problems.append(f"option tolerance: expected an integer ≥ 0 (pixels); got {tol!r}")
    cap = options.get("max_db", DEFAULT_MAX_DB)
    if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 0 < cap < float("inf"):
        problems.append(f"option max_db: expected a positive finite number of dB (the cap per image); got {cap!r}")
    if "detector" in options:
        problems += detector_option_problems(options["detector"])
    control = (ctx.conditions or {}).get("control")
    if control is None:
        problems.append(
            "needs conditions.control (the control each sample must follow: {detector: canny} or control files)"
        )
    elif isinstance(control, dict) and "detector" not in control and "detector" not in options:
        problems.append(
            "the control files name no detector: set conditions.control.detector or option detector (one of "
            f"{', '.join(DETECTORS)}) to the detector that made them"
        )
    return problems


register_metric(
    MetricDef(
        name=NAME,
        needs_reference=False,
        higher_is_better={"control_f1": True, "control_psnr": True},
        compute=compute_control_fidelity,
        per_sample=per_sample_control_fidelity,
        check=check_control_fidelity,
        options={
            "read": "which extractor output to read (default images)",
            "detector": "the detector that made control files without one, a name or {detector: name, ...} "
            "(default the suite's conditions.control detector)",
            "tolerance": "edge F1: pixels (Chebyshev) a matching edge may be off by (default 0)",
            "max_db": "image detectors: cap on each image's PSNR in dB (default 100)",
            "bootstrap": "bootstrap resamples for the CI (0: none; default 1000)",
            "confidence": "CI level (default 0.95)",
        },
        default_extractor="pixels",
        reads_source=True,
        needs_control=True,
        description="Does each output follow its control: the control's detector on the output vs the control "
        "(edges: F1, control_f1; lowres/gray: PSNR, control_psnr), mean over images.",
        reference="brute-force transcription; cv2.Canny",
        paper="ControlNet (Zhang et al. 2023); edge F1 as ControlNet++ (Li et al. 2024)",
    )
)
