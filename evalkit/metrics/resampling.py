"""Uncertainty for metric values: seeded percentile bootstrap and metric replicates (which the paired
comparisons of :mod:`evalkit.study.paired` difference).

Pure numpy, no networks. Every resampling draws from ``np.random.default_rng(seed)`` so a CI is
reproducible from (data, seed, n_resamples) alone. :func:`metric_replicates` is the one entry point for
"this metric on each bootstrap resample": a metric's own fast exact path (``MetricDef.replicates``) where it
has one, else a recomputation per resample.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from evalkit.metrics.base import MetricDef, MetricInputs

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
# Cheaper settings for replicates that are recomputed: FD's own CI is not needed; KID's subset average is
# reduced because both arms of a paired comparison draw the same reference subsets, so that noise cancels.
REPLICATE_OPTIONS: dict[str, dict[str, Any]] = {"fd": {"bootstrap": 0}, "kid": {"subsets": 10}}


def percentile_interval(
    samples: Sequence[float] | np.ndarray, confidence: float = DEFAULT_CONFIDENCE, *, recentre_on: float | None = None
) -> tuple[float, float]:
    """The central ``confidence`` interval of bootstrap replicates (percentile method).

    ``recentre_on``: shift the replicates so their mean equals this point estimate before taking
    percentiles. Needed for biased statistics such as FD, whose replicates (resamples hold duplicated
    samples, ~63% unique) sit systematically above the estimate; the shift removes the bootstrap
    estimate of that bias and keeps the spread. The interval is then widened, where needed, to contain the
    point itself: skewed replicates (a few far outliers pulling the mean) could otherwise give an interval
    beside its own estimate, and a CI of a difference that excluded the observed difference would contradict it.
    """
    arr = np.asarray(samples, dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return float("nan"), float("nan")
    point = None if recentre_on is None else float(recentre_on)
    if point is not None:
        arr = arr - arr.mean() + point
    alpha = (1.0 - confidence) / 2.0
    lo, hi = (float(q) for q in np.quantile(arr, [alpha, 1.0 - alpha]))
    if point is not None and np.isfinite(point):
        lo, hi = min(lo, point), max(hi, point)
    return lo, hi


def bootstrap_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, n) indices drawn with replacement; the same (n, n_resamples, seed) → same draws."""
    if n <= 0:
        raise ValueError("bootstrap needs at least one sample")
    rng = np.random.default_rng(seed)
    return rng.integers(0, n, size=(n_resamples, n))


def bootstrap_ci(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> tuple[float, float]:
    """Percentile CI of ``statistic(idx)`` where ``idx`` resamples ``range(n)`` with replacement.

    ``statistic`` receives the index array so that it can resample several aligned arrays at once
    (e.g. image and text embeddings of the same samples).
    """
    reps = [float(statistic(idx)) for idx in bootstrap_indices(n, n_resamples, seed)]
    return percentile_interval(reps, confidence)


def bootstrap_mean_ci(
    values: np.ndarray,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    transform: Callable[[float], float] | None = None,
) -> tuple[float, float]:
    """Percentile CI of the mean of per-sample ``values`` (vectorised; optional transform of the mean)."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    idx = bootstrap_indices(v.size, n_resamples, seed)
    means = v[idx].mean(axis=1)
    if transform is not None:
        means = np.array([transform(float(m)) for m in means])
    return percentile_interval(means, confidence)


def metric_replicates(defn: MetricDef, inputs: MetricInputs, idx: np.ndarray) -> dict[str, np.ndarray]:
    """``defn`` on the generated samples resampled by each row of ``idx`` ((B, n) indices) → row → (B,) values.

    Uses the metric's ``replicates`` hook where it gives an answer; otherwise recomputes the metric on each
    resample (labels, prompts and a task's sources, masks and controls resampled alongside), with
    :data:`REPLICATE_OPTIONS` and, for FD, the reference's Gaussian fitted once instead of once per resample.
    """
    if defn.replicates is not None:
        fast = defn.replicates(inputs, idx)
        if fast is not None:
            return fast
    from evalkit.metrics._common import feature_key, gaussian_stats
    from evalkit.metrics.base import MetricInputs

    no_ci = {"bootstrap": 0} if "bootstrap" in (defn.options or {}) else {}  # a replicate needs the value only
    opts = {**inputs.options, **no_ci, **REPLICATE_OPTIONS.get(defn.name, {})}
    ref = inputs.ref
    key = feature_key(MetricInputs(gen=inputs.gen, options=opts))
    if defn.name == "fd" and ref is not None and key in ref:
        mu, sigma = gaussian_stats(ref[key])  # fitted once for all replicates
        ref = {f"{key}.mu": mu, f"{key}.sigma": sigma}
    out: dict[str, list[float]] = {}
    for ix in idx:
        one = MetricInputs(
            gen={k: v[ix] for k, v in inputs.gen.items()},
            ref=ref,
            labels=None if inputs.labels is None else np.asarray(inputs.labels)[ix],
            prompts=None if inputs.prompts is None else [inputs.prompts[i] for i in ix],
            seed=inputs.seed,
            options=opts,
            train=inputs.train,  # the training split is not resampled: it is fixed, like the reference
            # a task's per-sample inputs follow their samples (sample i's source, mask and control)
            source=None if inputs.source is None else {k: v[ix] for k, v in inputs.source.items()},
            mask=None if inputs.mask is None else inputs.mask[ix],
            control=None if inputs.control is None else inputs.control[ix],
            control_spec=inputs.control_spec,
        )
        for row, val in defn.compute(one).items():
            out.setdefault(row, []).append(val.value)
    return {row: np.asarray(v) for row, v in out.items()}
