"""FD∞ (Chong & Forsyth, CVPR 2020): FD over subset sizes, a line in 1/N, its value at 1/N = 0."""

from __future__ import annotations

import numpy as np

from evalkit.metrics._common import flat2d, gen_array, option
from evalkit.metrics.base import MetricDef, MetricInputs, MetricValue, register_metric
from evalkit.metrics.frechet import (
    PreparedReference,
    _as_prepared,
    _ref,
    frechet_distance_resampled,
    prepare_reference,
)


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
    key = option(inputs, "read", "features")
    gen = flat2d(gen_array(inputs, key, "fd_inf"))
    entry = _ref(inputs, key, "fd_inf")
    if entry.prepared is None:
        entry.prepared = prepare_reference(entry.mu, entry.sigma)
    ref = entry.prepared
    n = gen.shape[0]
    lo = int(option(inputs, "min_n", max(n // 5, min(n, gen.shape[1] + 2))))
    sizes = np.unique(np.linspace(lo, n, int(option(inputs, "points", 15))).astype(np.int64))
    if sizes.size < 2:
        raise ValueError(f"fd_inf needs at least two distinct subset sizes; got N={n}, min_n={lo}")
    value, fds = fd_infinity(gen, ref, sizes=sizes, seed=inputs.seed)
    return {"fd_inf": MetricValue(value, extra={"sizes": sizes.tolist(), "fd_per_size": fds.tolist()})}


register_metric(
    MetricDef(
        name="fd_inf",
        needs_reference=True,
        higher_is_better={"fd_inf": False},
        compute=compute_fd_inf,
        options={
            "read": "which extractor output to read (default features)",
            "min_n": "smallest subset size (default N/5)",
            "points": "number of subset sizes (default 15)",
        },
        description="FD∞ (Chong & Forsyth 2020): FD over 15 subset sizes, linear fit in 1/N, value at 1/N=0.",
    )
)
