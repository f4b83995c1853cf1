"""The ``fd`` metric against an exact value, on both of its paths (README, "Metrics and their conventions").

Exact: for centred samples X (N×d) and any factor F with FFᵀ = Σ₂, the eigenvalues of Σ₁Σ₂ that are not 0 are
the squared singular values of XF/√(N−1), so ``tr √(Σ₁Σ₂) = Σ σᵢ(XF)/√(N−1)``. An SVD gets singular values to
~eps·σ_max absolute (no square root of rounding), which makes it the reference for both paths:

- N ≤ d without bootstrap: the direct N×N low-rank path. Its only error is the one eigenvalue centring leaves
  at rounding level (rank N−1), ≲ 2·√(eps·‖Σ₁Σ₂‖)/FD relative. ``scipy.linalg.sqrtm`` of the d×d product
  adds d−N+1 such square roots, so it is the less accurate one there.
- N > d: the prepared-reference path, which equals the exact value and sqrtm alike.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import cholesky, sqrtm

from evalkit.metrics import MetricInputs, get_metric
from evalkit.metrics.frechet import gaussian_stats


def _features(rng: np.random.Generator, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    """Non-negative, correlated, with a decaying spectrum (like pooled CNN features)."""
    basis = np.random.default_rng(99).normal(size=(d // 4, d)) / 4.0
    x = (rng.normal(size=(n, d // 4)) * np.linspace(1.5, 0.2, d // 4)) @ basis + 0.3 * rng.normal(size=(n, d))
    return np.maximum(x + 0.5 + shift, 0.0)


def _exact_and_sqrtm(x: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    m1, s1 = gaussian_stats(x)
    m2, s2 = gaussian_stats(ref)
    base = float((m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2))
    f = cholesky(s2, lower=True)
    exact = base - 2.0 * float(np.linalg.svd((x - m1) @ f, compute_uv=False).sum()) / np.sqrt(len(x) - 1)
    with np.errstate(all="ignore"):
        by_sqrtm = base - 2.0 * float(np.trace(sqrtm(s1 @ s2)).real)
    return exact, by_sqrtm


@pytest.mark.parametrize("n", [100, 400])  # N ≤ d (direct low-rank path) and N > d (prepared path)
def test_fd_equals_the_exact_value_and_sqrtm_is_the_less_accurate_below_d(n):
    d = 256
    rng = np.random.default_rng(n)
    ref, x = _features(rng, 3 * d, d), _features(rng, n, d, shift=0.05)
    ours = (
        get_metric("fd")
        .compute(MetricInputs(gen={"features": x}, ref={"features": ref}, options={"bootstrap": 0}))["fd"]
        .value
    )
    exact, by_sqrtm = _exact_and_sqrtm(x, ref)
    err_ours, err_sqrtm = abs(ours - exact) / exact, abs(by_sqrtm - exact) / exact
    print(f"[agreement] fd N={n} d={d}: evalkit {err_ours:.2e}, scipy sqrtm {err_sqrtm:.2e} from the exact value")
    if n > d:
        # full-rank products: every form is accurate (~1e-14 measured); 1e-9 leaves room for BLAS/LAPACK builds
        assert err_ours <= 1e-9 and err_sqrtm <= 1e-9
    else:
        # one rounding-level eigenvalue, ≲ 2·√(eps·‖Σ₁Σ₂‖)/FD ≈ 1e-9 here (measured ~1e-10), vs d−N+1 = 157 of them
        # in sqrtm (~1e-7): evalkit is the closer to the exact value, and sqrtm's FD is the low one
        assert err_ours <= 1e-8
        assert err_ours < err_sqrtm and by_sqrtm < exact
