"""FD∞ (Chong & Forsyth, CVPR 2020): FD over subset sizes, a line in 1/N, its value at 1/N = 0."""

from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.metrics._common import feature_key, flat2d, gen_array, integer_option, option
from evalkit.metrics.base import MetricContext, MetricDef, MetricInputs, MetricValue, register_metric
from evalkit.metrics.frechet import (
    PreparedReference,
    _as_prepared,
    _ref,
    frechet_distance_resampled,
    prepare_reference,
)

DEFAULT_POINTS = 15


def fd_infinity(
    gen: np.ndarray,
    mu_r: np.ndarray | PreparedReference,
    sigma_r: np.ndarray | None = None,
    *,
    sizes: np.ndarray,
    seed: int,
) -> tuple[float, np.ndarray]:
    """FD at each subset size (a fresh seeded shuffle per size, as the authors' code), then a least-squares
    line in 1/N extrapolated to 1/N = 0. Returns (FD∞, FD per size). The reference may be given as
    (μ, Σ) or as a :class:`PreparedReference` (``sigma_r`` then None)."""
    gen = flat2d(gen)
    ref = _as_prepared(mu_r, sigma_r)
    rng = np.random.default_rng(seed)
    fds = frechet_distance_resampled(gen, ref, [rng.permutation(gen.shape[0])[:n] for n in sizes])
    slope, intercept = np.polyfit(1.0 / sizes.astype(np.float64), fds, 1)
    return float(intercept), fds


def compute_fd_inf(inputs: MetricInputs) -> dict[str, MetricValue]:
    key = feature_key(inputs)
    gen = flat2d(gen_array(inputs, key, "fd_inf"))
    entry = _ref(inputs, key, "fd_inf")
    if entry.prepared is None:
        entry.prepared = prepare_reference(entry.mu, entry.sigma)
    ref = entry.prepared
    n = gen.shape[0]
    lo = int(option(inputs, "min_n", max(n // 5, min(n, gen.shape[1] + 2))))
    sizes = np.unique(np.linspace(lo, n, int(option(inputs, "points", DEFAULT_POINTS))).astype(np.int64))
    if sizes.size < 2:
        raise ValueError(f"fd_inf needs at least two distinct subset sizes; got N={n}, min_n={lo}")
    value, fds = fd_infinity(gen, ref, sizes=sizes, seed=inputs.seed)
    return {"fd_inf": MetricValue(value, extra={"sizes": sizes.tolist(), "fd_per_size": fds.tolist()})}


def check_fd_inf(options: dict[str, Any], ctx: MetricContext) -> list[str]:
    """Before a run: the line in 1/N needs two distinct subset sizes from ``min_n`` to N, each of ≥ 2 samples (a
    covariance). So ``points`` ≥ 2 and a given ``min_n`` with 2 ≤ min_n < samples (min_n = samples leaves one size;
    min_n > samples asks for subsets larger than the set, which silently hold all N: a meaningless fit). The default
    min_n, max(N/5, min(N, feature dim + 2)), depends on the feature dimension, unknown before any features exist:
    here only samples ≤ 3 (one size whatever the dimension) is refused; samples ≤ dim + 2 still fails at scoring."""
    points, problem = integer_option(options, "points", DEFAULT_POINTS, 2, "a line needs two subset sizes")
    problems = [problem] if points is None else []
    if "min_n" not in options:
        if ctx.samples <= 3:
            problems.append(
                f"needs samples ≥ 4 (subsets from the default min_n = max(samples/5, min(samples, feature dim + 2)) "
                f"up to samples give one size only); the suite has samples: {ctx.samples}; set samples > feature "
                "dim + 2, or options.min_n"
            )
        return problems
    lo, problem = integer_option(options, "min_n", 2, 2, "the smallest subset needs a covariance")
    if lo is None:
        problems.append(problem)
    elif lo >= ctx.samples:
        fix = f" or options.min_n ≤ {ctx.samples - 1}" if ctx.samples > 2 else ""
        problems.append(
            f"min_n={lo} needs samples > {lo} (subsets from min_n up to samples, two sizes at least); the suite has "
            f"samples: {ctx.samples}; set samples ≥ {lo + 1}{fix}"
        )
    return problems


register_metric(
    MetricDef(
        name="fd_inf",
        reference="mchong6/FID_IS_infinity (transcribed)",
        paper="Chong & Forsyth 2020",
        needs_reference=True,
        higher_is_better={"fd_inf": False},
        compute=compute_fd_inf,
        check=check_fd_inf,
        options={
            "read": "which extractor output to read (default features, or image_embeds for CLIP extractors)",
            "min_n": "smallest subset size (default N/5)",
            "points": "number of subset sizes (default 15)",
        },
        description="FD∞ (Chong & Forsyth 2020): FD over 15 subset sizes, linear fit in 1/N, value at 1/N=0.",
    )
)
