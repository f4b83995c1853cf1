"""Inception Score (Salimans et al. 2016), torch-fidelity convention.

Logits are shuffled with ``np.random.RandomState(seed).permutation`` and split into 10 contiguous
chunks ``[i*N//10, (i+1)*N//10)``; per chunk ``exp(mean KL(p(y|x) || p(y)))`` in float64. Value =
mean, std = std (ddof=0) over splits. On Inception, evalkit's "logits" output is the 1008-way
unbiased head torch-fidelity uses (``logits_unbiased``).

Seed: the shuffle uses option ``is_seed`` if given, else the cell's seed (default 0), while
torch-fidelity's default is ``rng_seed=2020``. evalkit keeps its default (changing it would shift every
stored baseline); options ``{is_seed: 2020}`` reproduce torch-fidelity's default numbers exactly
(tests/metrics/test_torch_fidelity_defaults.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.metrics._common import flat2d, gen_array, integer_option, option
from evalkit.metrics.base import MetricContext, MetricDef, MetricInputs, MetricValue, register_metric

DEFAULT_SPLITS = 10


def inception_score_splits(
    logits: np.ndarray, *, splits: int = DEFAULT_SPLITS, seed: int = 0, shuffle: bool = True
) -> np.ndarray:
    from scipy.special import log_softmax  # here, not at import: `evalkit --help` and `list` load no scipy

    logits = flat2d(logits)
    n = logits.shape[0]
    if n < splits:
        raise ValueError(f"inception score with {splits} splits needs at least {splits} samples, got {n}")
    if shuffle:
        logits = logits[np.random.RandomState(seed).permutation(n)]
    log_p = log_softmax(logits, axis=1)
    p = np.exp(log_p)
    scores = np.empty(splits, dtype=np.float64)
    for i in range(splits):
        lo, hi = i * n // splits, (i + 1) * n // splits
        p_c, log_p_c = p[lo:hi], log_p[lo:hi]
        log_q = np.log(p_c.mean(axis=0, keepdims=True))
        scores[i] = np.exp((p_c * (log_p_c - log_q)).sum(axis=1).mean())
    return scores


def compute_is(inputs: MetricInputs) -> dict[str, MetricValue]:
    key = option(inputs, "read", "logits")
    scores = inception_score_splits(
        gen_array(inputs, key, "is"),
        splits=int(option(inputs, "splits", DEFAULT_SPLITS)),
        seed=int(option(inputs, "is_seed", inputs.seed)),
    )
    return {"is": MetricValue(float(scores.mean()), std=float(scores.std()), extra={"splits": int(scores.size)})}


def check_is(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    """Before a run: ``splits`` ≥ 1 (0 splits average nothing: NaN) and samples ≥ splits
    (:func:`inception_score_splits` refuses fewer)."""
    splits, problem = integer_option(options, "splits", DEFAULT_SPLITS, 1, "the score is a mean over splits")
    if splits is None:
        return [problem]
    if ctx.samples < splits:
        return [
            f"splits={splits} needs samples ≥ {splits} (each split scores its own share of the samples); the suite "
            f"has samples: {ctx.samples}; set samples ≥ {splits} or options.splits ≤ {ctx.samples}"
        ]
    return []


register_metric(
    MetricDef(
        name="is",
        reference="torch-fidelity, torchmetrics InceptionScore",
        paper="Salimans et al. 2016",
        needs_reference=False,
        higher_is_better={"is": True},
        compute=compute_is,
        check=check_is,
        options={
            "read": "which extractor output to read (default logits)",
            "splits": "number of splits (default 10)",
            "is_seed": "seed of the shuffle (default: the cell seed)",
        },
        description="Inception Score: 10 seeded-shuffle splits, float64 (torch-fidelity convention); "
        "value = mean, std = std over splits. Bounded by the number of classes. The shuffle uses the "
        "cell's seed (default 0), torch-fidelity's rng_seed=2020: for its default numbers set "
        "options {is_seed: 2020}.",
    )
)
