"""Kernel Inception Distance (Bińkowski et al. 2018), torch-fidelity convention.

Unbiased MMD² with the cubic polynomial kernel ``k(x, y) = (x·y / d + 1)³`` over 100 subsets of
``min(1000, N_gen, N_ref)`` samples, drawn with ``np.random.RandomState(seed)`` exactly as
torch-fidelity does (gen subset then ref subset, without replacement). Value = mean, std = std
(ddof=0) of the subset estimates. Kernels are computed in float64 (torch-fidelity keeps the input dtype;
on float64 features the two agree exactly).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.metrics._common import (
    feature_key,
    flat2d,
    gen_array,
    integer_option,
    option,
    ref_array,
    too_few_samples,
)
from evalkit.metrics.base import MetricContext, MetricDef, MetricInputs, MetricValue, register_metric

DEFAULT_SUBSETS = 100
DEFAULT_SUBSET_SIZE = 1000


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    """Unbiased MMD² for equal-size samples: off-diagonal within-set means minus twice the cross mean."""
    m = k_xx.shape[0]
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kid_subsets(
    gen: np.ndarray,
    ref: np.ndarray,
    *,
    subsets: int = DEFAULT_SUBSETS,
    subset_size: int = DEFAULT_SUBSET_SIZE,
    seed: int = 0,
) -> np.ndarray:
    """The MMD² estimate of every subset (length ``subsets``)."""
    gen, ref = flat2d(gen), flat2d(ref)
    m = min(subset_size, gen.shape[0], ref.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 samples on each side, got {gen.shape[0]} and {ref.shape[0]}")
    rng = np.random.RandomState(seed)
    out = np.empty(subsets, dtype=np.float64)
    for i in range(subsets):
        x = gen[rng.choice(gen.shape[0], m, replace=False)]
        y = ref[rng.choice(ref.shape[0], m, replace=False)]
        out[i] = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y))
    return out


def compute_kid(inputs: MetricInputs) -> dict[str, MetricValue]:
    key = feature_key(inputs)
    gen = gen_array(inputs, key, "kid")
    ref = ref_array(inputs, key, "kid")
    size = int(option(inputs, "subset_size", DEFAULT_SUBSET_SIZE))
    est = kid_subsets(
        gen,
        ref,
        subsets=int(option(inputs, "subsets", DEFAULT_SUBSETS)),
        subset_size=size,
        seed=int(option(inputs, "kid_seed", inputs.seed)),
    )
    used = min(size, gen.shape[0], ref.shape[0])
    return {
        "kid": MetricValue(
            float(est.mean()), std=float(est.std()), extra={"subsets": int(est.size), "subset_size": int(used)}
        )
    }


def kid_replicates(inputs: MetricInputs, idx: np.ndarray) -> dict[str, np.ndarray] | None:
    """KID of ``gen[i]`` per row ``i`` of ``idx``, equal to :func:`compute_kid`'s value, from kernels computed
    once. Only when every subset holds the whole generated set (N ≤ subset size and ≤ reference size, the
    usual CI setting); otherwise None (the caller recomputes per resample)."""
    key = feature_key(inputs)
    ref, gen = flat2d(ref_array(inputs, key, "kid")), flat2d(gen_array(inputs, key, "kid"))
    subsets = int(option(inputs, "subsets", DEFAULT_SUBSETS))
    n = len(gen)
    if n < 2 or n != min(int(option(inputs, "subset_size", DEFAULT_SUBSET_SIZE)), n, len(ref)):
        return None
    rng = np.random.RandomState(int(option(inputs, "kid_seed", inputs.seed)))  # the draws kid_subsets makes
    k_yy, k_gr, k_gg = polynomial_kernel(ref, ref), polynomial_kernel(gen, ref), polynomial_kernel(gen, gen)
    cross, within_ref = np.zeros(n), 0.0
    for _ in range(subsets):
        rng.choice(n, n, replace=False)  # the generated subset: a permutation of the whole set
        y = rng.choice(len(ref), n, replace=False)
        sub = k_yy[np.ix_(y, y)]
        within_ref += (sub.sum() - np.trace(sub)) / (n * (n - 1)) / subsets
        cross += k_gr[:, y].sum(axis=1) / subsets
    diag = np.diag(k_gg)
    out = np.array(
        [
            (k_gg[np.ix_(ix, ix)].sum() - diag[ix].sum()) / (n * (n - 1)) + within_ref - 2.0 * cross[ix].sum() / (n * n)
            for ix in idx
        ]
    )
    return {"kid": out}


def check_kid(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    """Before a run: ``subsets`` ≥ 1 (none: a mean of nothing, NaN), and each subset — ``min(subset_size, samples,
    reference size)`` samples — holds 2 or more (the unbiased estimator pairs distinct samples): ``subset_size`` ≥ 2
    and samples ≥ 2. A ``subset_size`` above the samples is no problem: subsets then take all of them."""
    why = "the unbiased MMD² needs two distinct samples in a subset"
    problems = [
        p
        for p in (
            integer_option(options, "subsets", DEFAULT_SUBSETS, 1, "KID is the mean over subsets")[1],
            integer_option(options, "subset_size", DEFAULT_SUBSET_SIZE, 2, why)[1],
        )
        if p
    ]
    return problems + too_few_samples(ctx, 2, why)


register_metric(
    MetricDef(
        name="kid",
        reference="torch-fidelity, clean-fid",
        paper="Bińkowski et al. 2018",
        needs_reference=True,
        higher_is_better={"kid": False},
        compute=compute_kid,
        check=check_kid,
        options={
            "read": "which extractor output to read (default features, or image_embeds for CLIP extractors)",
            "subsets": "number of subsets (default 100)",
            "subset_size": "samples per subset (default 1000)",
            "kid_seed": "seed of the subset draws (default: the cell seed)",
        },
        description="Kernel Inception Distance: unbiased MMD², cubic polynomial kernel, 100 subsets of ≤1000 "
        "(torch-fidelity convention); value = mean, std = std over subsets. Subsets are drawn with the "
        "cell's seed (default 0), torch-fidelity's with rng_seed=2020: for its default numbers set "
        "options {kid_seed: 2020}.",
        replicates=kid_replicates,
    )
)
