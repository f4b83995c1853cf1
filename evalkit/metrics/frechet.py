"""Fréchet distance between Gaussian fits of feature sets (FID when the features are Inception's),
and FD∞, its extrapolation to infinitely many samples (Chong & Forsyth, CVPR 2020).

Convention (DESIGN.md): float64 statistics, ``np.cov`` with ddof=1 (as pytorch-fid, clean-fid,
torch-fidelity and torchmetrics), and ``tr sqrt(Σ1 Σ2)`` from the eigenvalues of Σ1Σ2 cast to complex,
taking the real part of the sum of square roots. This is what torchmetrics does; it agrees with the
``scipy.linalg.sqrtm`` path of pytorch-fid/clean-fid to ~1e-10 relative and is several times faster.

With fewer generated samples than feature dimensions (N ≤ d, e.g. 1000 samples of 2048-d pool3)
Σ1 = AAᵀ has rank < N, and the nonzero eigenvalues of Σ1Σ2 = A(AᵀΣ2) are those of the small symmetric
N×N matrix AᵀΣ2A (AB and BA share nonzero eigenvalues). The same eigenvalue form is then computed from
that matrix: exact, real, and O(N d²) instead of an O(d³) non-symmetric eigendecomposition.
"""

from __future__ import annotations

import numpy as np

from evalkit.metrics._common import MU_SUFFIX, SIGMA_SUFFIX, flat2d, gen_array, option
from evalkit.metrics.base import MetricDef, MetricInputs, MetricValue, register_metric
from evalkit.stats import bootstrap_indices, percentile_interval

# Bootstrap replicates by default only while the feature dimension keeps each replicate cheap
# (a 2048-d eigendecomposition costs seconds on a CPU); ask with options {"bootstrap": N} otherwise.
AUTO_BOOTSTRAP_MAX_DIM = 512
DEFAULT_BOOTSTRAP = 100


def gaussian_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (ddof=1) in float64."""
    x = flat2d(x)
    if x.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 samples, got {x.shape[0]}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrt(Σ1 Σ2)`` via the eigenvalues of Σ1Σ2 (complex sqrt, real part of the sum)."""
    eig = np.linalg.eigvals(np.asarray(sigma1, np.float64) @ np.asarray(sigma2, np.float64))
    return float(np.sqrt(eig.astype(np.complex128)).sum().real)


def trace_sqrt_product_lowrank(centred: np.ndarray, sigma2: np.ndarray) -> float:
    """``tr sqrt(Σ1 Σ2)`` for Σ1 = XᵀX/(N-1) given the centred samples X (N, d): eigenvalues of the
    N×N matrix XΣ2Xᵀ/(N-1), which are the nonzero eigenvalues of Σ1Σ2."""
    x = np.asarray(centred, np.float64)
    m = (x @ np.asarray(sigma2, np.float64) @ x.T) / (x.shape[0] - 1)
    eig = np.linalg.eigvalsh((m + m.T) / 2.0)
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance_from_samples(x: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """FD of samples ``x`` against N(μ2, Σ2); uses the N×N eigenproblem when N ≤ d (see module docstring)."""
    x = flat2d(x)
    mu1, sigma1 = gaussian_stats(x)
    if x.shape[0] > x.shape[1]:
        return frechet_distance(mu1, sigma1, mu2, sigma2)
    diff = mu1 - np.asarray(mu2, np.float64)
    tr = trace_sqrt_product_lowrank(x - mu1, sigma2)
    return float(diff @ diff + np.trace(sigma1) + np.trace(np.asarray(sigma2, np.float64)) - 2.0 * tr)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """``|μ1-μ2|² + tr Σ1 + tr Σ2 - 2 tr sqrt(Σ1Σ2)`` in float64."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"feature dimensions differ: {mu1.shape} vs {mu2.shape}")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt_product(sigma1, sigma2))


def reference_stats(ref: dict[str, np.ndarray], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(μ, Σ) of the reference: precomputed ``key.mu``/``key.sigma`` if present, else fitted."""
    if key + MU_SUFFIX in ref and key + SIGMA_SUFFIX in ref:
        return np.asarray(ref[key + MU_SUFFIX], np.float64), np.asarray(ref[key + SIGMA_SUFFIX], np.float64)
    if key not in ref:
        raise ValueError(f"reference has neither {key!r} nor {key + MU_SUFFIX!r}/{key + SIGMA_SUFFIX!r}; got {sorted(ref)}")
    return gaussian_stats(ref[key])


def _ref(inputs: MetricInputs, key: str, metric: str) -> tuple[np.ndarray, np.ndarray]:
    if inputs.ref is None:
        raise ValueError(f"metric {metric!r} needs reference features, none were given")
    return reference_stats(inputs.ref, key)


def compute_fd(inputs: MetricInputs) -> dict[str, MetricValue]:
    key = option(inputs, "read", "features")
    gen = flat2d(gen_array(inputs, key, "fd"))
    mu_r, sigma_r = _ref(inputs, key, "fd")
    value = frechet_distance_from_samples(gen, mu_r, sigma_r)
    n_boot = int(option(inputs, "bootstrap", DEFAULT_BOOTSTRAP if gen.shape[1] <= AUTO_BOOTSTRAP_MAX_DIM else 0))
    out = MetricValue(value, extra={"n_gen": int(gen.shape[0]), "dim": int(gen.shape[1])})
    if n_boot > 0:
        # Resample the generated set only: the reference is fixed in a study, its sampling error shared.
        # Replicates are recentred on the estimate (see evalkit.stats.percentile_interval).
        reps = [frechet_distance_from_samples(gen[idx], mu_r, sigma_r)
                for idx in bootstrap_indices(gen.shape[0], n_boot, int(option(inputs, "bootstrap_seed", inputs.seed)))]
        out.ci_low, out.ci_high = percentile_interval(reps, float(option(inputs, "confidence", 0.95)),
                                                      recentre_on=value)
        out.extra["bootstrap"] = n_boot
    return {"fd": out}


def fd_infinity(gen: np.ndarray, mu_r: np.ndarray, sigma_r: np.ndarray, *, sizes: np.ndarray, seed: int) -> tuple[float, np.ndarray]:
    """FD at each subset size (a fresh seeded shuffle per size, as the authors' code), then a least-squares
    line in 1/N extrapolated to 1/N = 0. Returns (FD∞, FD per size)."""
    rng = np.random.default_rng(seed)
    fds = np.array([frechet_distance_from_samples(gen[rng.permutation(gen.shape[0])[:n]], mu_r, sigma_r)
                    for n in sizes])
    slope, intercept = np.polyfit(1.0 / sizes.astype(np.float64), fds, 1)
    return float(intercept), fds


def compute_fd_inf(inputs: MetricInputs) -> dict[str, MetricValue]:
    key = option(inputs, "read", "features")
    gen = flat2d(gen_array(inputs, key, "fd_inf"))
    mu_r, sigma_r = _ref(inputs, key, "fd_inf")
    n = gen.shape[0]
    lo = int(option(inputs, "min_n", max(n // 5, min(n, gen.shape[1] + 2))))
    sizes = np.unique(np.linspace(lo, n, int(option(inputs, "points", 15))).astype(np.int64))
    if sizes.size < 2:
        raise ValueError(f"fd_inf needs at least two distinct subset sizes; got N={n}, min_n={lo}")
    value, fds = fd_infinity(gen, mu_r, sigma_r, sizes=sizes, seed=inputs.seed)
    return {"fd_inf": MetricValue(value, extra={"sizes": sizes.tolist(), "fd_per_size": fds.tolist()})}


register_metric(MetricDef(
    name="fd", reads=("features",), needs_reference=True, higher_is_better={"fd": False}, compute=compute_fd,
    description="Fréchet distance of Gaussian fits (FID on Inception pool3); float64 eigenvalue form; "
                "bootstrap CI over generated samples.",
))
register_metric(MetricDef(
    name="fd_inf", reads=("features",), needs_reference=True, higher_is_better={"fd_inf": False},
    compute=compute_fd_inf,
    description="FD∞ (Chong & Forsyth 2020): FD over 15 subset sizes, linear fit in 1/N, value at 1/N=0.",
))
