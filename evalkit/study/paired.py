"""The paired bootstrap core that ``evalkit check`` (run against baseline) and the study (cell against cell)
share: a metric's replicates on resampled generated samples, the interval of a difference, and the tie rule.

Pairing: both arms are resampled with the *same* index rows (the same sample indices, hence the same seeds
and conditions), so the between-sample variation they share cancels in the difference. The reference is
fixed (it is the same in both arms). Each arm's replicates are computed once and every difference is taken
from them: the cost is per arm, not per pair.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from evalkit.metrics.base import MetricDef, MetricInputs
from evalkit.metrics.resampling import metric_replicates, percentile_interval
from evalkit.metrics.threads import single_thread_blas

if TYPE_CHECKING:
    from evalkit.store import RunData

BETTER, WORSE, TIE = "better", "worse", "tie"
# What a metric raises where it has no replicates on these samples (too few distinct samples, a reference
# it cannot read): the comparison then has no paired CI, never a crash.
NO_CI_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, np.linalg.LinAlgError)


def replicates(defn: MetricDef, inputs: MetricInputs, idx: np.ndarray) -> dict[str, np.ndarray]:
    """Each row of ``defn`` on the generated samples resampled by every row of ``idx`` ((B, n) indices).

    :func:`evalkit.metrics.resampling.metric_replicates` (the metric's own fast path, else a recomputation per
    resample), with FD's resampled path (Z = X·F once, each replicate from its rows; equal to recomputing FD
    on the resample to ~1e-10) where the metric has no hook of its own. Raises one of :data:`NO_CI_ERRORS`
    where the metric has no value on a resample."""
    with single_thread_blas():  # many small products: threads only add overhead (and oversubscribe)
        if defn.name == "fd" and defn.replicates is None and inputs.ref is not None:
            return {"fd": _fd_replicates(inputs, idx)}
        if any(x is not None for x in (inputs.source, inputs.mask, inputs.control)):
            return _task_replicates(defn, inputs, idx)
        return metric_replicates(defn, inputs, idx)


def _task_replicates(defn: MetricDef, inputs: MetricInputs, idx: np.ndarray) -> dict[str, np.ndarray]:
    """A task cell's replicates: each sample's source, mask and control resampled with it (sample i keeps its own
    partner). A mean of per-sample terms (``per_sample``: psnr, ssim, control_fidelity) is replicated exactly from
    its terms; another metric is recomputed on each resample (:func:`~evalkit.metrics.resampling.metric_replicates`,
    which carries the task's inputs along)."""
    if defn.per_sample is not None:
        terms = defn.per_sample(inputs)
        return {row: np.asarray(t, dtype=np.float64)[idx].mean(axis=1) for row, t in terms.items()}
    return metric_replicates(defn, inputs, idx)


def _fd_replicates(inputs: MetricInputs, idx: np.ndarray) -> np.ndarray:
    from evalkit.metrics._common import flat2d
    from evalkit.metrics.frechet import frechet_distance_resampled, prepare_reference, reference_stats

    key = inputs.options.get("read", "features")
    if key not in inputs.gen:
        raise KeyError(f"fd: the generated features have no {key!r} output")
    prepared = prepare_reference(*reference_stats(inputs.ref or {}, key))
    return frechet_distance_resampled(flat2d(inputs.gen[key]), prepared, idx)


def difference_interval(
    reps_a: np.ndarray, reps_b: np.ndarray, delta: float, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of the replicate differences a − b, recentred on the observed difference ``delta``
    (FD-like statistics are biased on resamples; the shift keeps the spread and always contains ``delta``)."""
    return percentile_interval(np.asarray(reps_a) - np.asarray(reps_b), confidence, recentre_on=delta)


def pair_verdict(ci: tuple[float, float] | None, *, higher_is_better: bool) -> str:
    """``better`` / ``worse`` (for arm a against arm b) only when the CI of a − b excludes 0, else ``tie``."""
    if ci is None or not all(math.isfinite(v) for v in ci):
        return TIE
    sign = 1.0 if higher_is_better else -1.0
    lo, hi = sorted((sign * ci[0], sign * ci[1]))
    if lo > 0:
        return BETTER
    if hi < 0:
        return WORSE
    return TIE


def run_conditions(run: RunData) -> tuple[np.ndarray | None, list[str] | None]:
    """Per-sample labels and prompts as the run stored them; for folders written before runs stored them,
    expanded again from the suite's conditions (prompt files that cannot be found then give no prompts)."""
    labels, prompts = run.conditions()
    if labels is not None or prompts is not None:
        return labels, prompts
    spec = run.config.get("conditions")
    if not spec:
        return None, None
    from evalkit.suite import expand_conditions

    try:
        base_dir = Path(run.config["file"]).parent if run.config.get("file") else None
        c = expand_conditions(spec, run.n, base_dir)
    except (OSError, ValueError, KeyError):
        return (expand_conditions({"classes": spec["classes"]}, run.n).labels if "classes" in spec else None), None
    return c.labels, c.prompts
