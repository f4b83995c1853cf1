"""Fréchet distance: the eigenvalue form against closed forms and the scipy ``sqrtm`` path; bootstrap
CIs; precomputed-statistics references; FD∞."""

from __future__ import annotations

import numpy as np
import pytest

from evalkit.metrics import MetricInputs, get_metric
from evalkit.metrics.frechet import frechet_distance, gaussian_stats


def _sqrtm_fd(mu1, s1, mu2, s2) -> float:
    """The pytorch-fid / clean-fid path: scipy.linalg.sqrtm of Σ1Σ2 (the reference this must match)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    with np.errstate(all="ignore"):
        return float(calculate_frechet_distance(mu1, s1, mu2, s2))


def test_fd_closed_form_diagonal():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 2, 50), rng.uniform(0.1, 2, 50)
    mu1, mu2 = rng.normal(size=50), rng.normal(size=50)
    expected = float(((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    assert frechet_distance(mu1, np.diag(a), mu1, np.diag(a)) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.slow
def test_fd_2048_matches_scipy_sqrtm_path():
    """Dense 2048-d statistics (Inception pool3 size): eigenvalue form vs sqrtm ≤ 1e-6 relative."""
    rng = np.random.default_rng(1)
    d = 2048

    def spd(scale: float) -> np.ndarray:
        a = rng.normal(size=(d, d + 64)) * scale
        return a @ a.T / (d + 64) + 1e-3 * np.eye(d)

    mu1, mu2 = rng.normal(size=d), rng.normal(size=d) * 0.5
    s1, s2 = spd(1.0), spd(0.7)
    ours, theirs = frechet_distance(mu1, s1, mu2, s2), _sqrtm_fd(mu1, s1, mu2, s2)
    rel = abs(ours - theirs) / abs(theirs)
    print(f"[agreement] FD 2048-d eigenvalue form vs scipy sqrtm: {ours:.12g} vs {theirs:.12g} rel={rel:.3e}")
    assert rel <= 1e-6


def test_fd_small_sample_matches_sqrtm_path():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(300, 64)), rng.normal(size=(200, 64)) * 1.1 + 0.2
    m1, s1 = gaussian_stats(x)
    m2, s2 = gaussian_stats(y)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(_sqrtm_fd(m1, s1, m2, s2), rel=1e-9)


@pytest.mark.parametrize("n", [5, 40, 64])
def test_fd_lowrank_path_equals_dense_eigenvalue_form(n):
    """N ≤ d: the N×N eigenproblem gives the same FD as eigenvalues of the d×d product Σ1Σ2 (up to the
    dense form's own noise: square roots of ~1e-16 eigenvalues that should be 0, ~1e-8 each)."""
    from evalkit.metrics.frechet import frechet_distance_from_samples

    rng = np.random.default_rng(6)
    x, y = rng.normal(size=(n, 64)), rng.normal(size=(200, 64)) * 0.8 + 0.1
    m2, s2 = gaussian_stats(y)
    dense = frechet_distance(*gaussian_stats(x), m2, s2)
    low = frechet_distance_from_samples(x, m2, s2)
    # The dense forms add d−n+1 square roots of rounding-level eigenvalues (≲ eps·‖Σ1Σ2‖ each, the LAPACK
    # build decides their size and sign): up to (d−n+1)·2·sqrt(eps·‖Σ1Σ2‖)/FD ≈ 7e-8 relative at n = 5;
    # measured 1.7e-8. 1e-6 leaves room for another CPU/LAPACK and still catches any real difference.
    assert low == pytest.approx(dense, rel=1e-6)
    assert low == pytest.approx(_sqrtm_fd(*gaussian_stats(x), m2, s2), rel=1e-6)


def test_fd_metric_with_stats_reference_equals_feature_reference():
    rng = np.random.default_rng(3)
    gen, ref = rng.normal(size=(120, 16)), rng.normal(size=(150, 16)) + 0.3
    mu, sigma = gaussian_stats(ref)
    fd = get_metric("fd")
    a = fd.compute(MetricInputs(gen={"features": gen}, ref={"features": ref}, options={"bootstrap": 0}))["fd"]
    b = fd.compute(
        MetricInputs(gen={"features": gen}, ref={"features.mu": mu, "features.sigma": sigma}, options={"bootstrap": 0})
    )["fd"]
    assert a.value == pytest.approx(b.value, rel=1e-12)
    with pytest.raises(ValueError, match="only mean/covariance"):
        get_metric("kid").compute(MetricInputs(gen={"features": gen}, ref={"features.mu": mu, "features.sigma": sigma}))


def test_fd_bootstrap_ci_is_seeded_and_brackets_value():
    rng = np.random.default_rng(4)
    inputs = dict(gen={"features": rng.normal(size=(200, 8))}, ref={"features": rng.normal(size=(300, 8)) + 0.5})
    fd = get_metric("fd")
    a = fd.compute(MetricInputs(**inputs, seed=7, options={"bootstrap": 200}))["fd"]
    b = fd.compute(MetricInputs(**inputs, seed=7, options={"bootstrap": 200}))["fd"]
    c = fd.compute(MetricInputs(**inputs, seed=8, options={"bootstrap": 200}))["fd"]
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert (a.ci_low, a.ci_high) != (c.ci_low, c.ci_high)
    assert a.ci_low < a.value < a.ci_high
    assert a.extra["bootstrap"] == 200


def test_fd_inf_extrapolates_towards_the_population_value():
    """Two Gaussians with known FD: FD at N is biased upward by ~c/N; FD∞ removes most of it."""
    rng = np.random.default_rng(5)
    d, n = 32, 1200
    true_fd = d * 0.25**2  # means differ by 0.25 in every coordinate, identical unit covariances
    ref = rng.normal(size=(200_000 // d, d))
    mu_r, sig_r = np.zeros(d), np.eye(d)
    gen = rng.normal(size=(n, d)) + 0.25
    inputs = MetricInputs(
        gen={"features": gen}, ref={"features.mu": mu_r, "features.sigma": sig_r}, seed=0, options={"bootstrap": 0}
    )
    at_n = get_metric("fd").compute(inputs)["fd"].value
    inf = get_metric("fd_inf").compute(inputs)["fd_inf"]
    assert abs(inf.value - true_fd) < abs(at_n - true_fd)
    assert len(inf.extra["sizes"]) == 15
    del ref


# -- the prepared-reference (symmetric) form -------------------------------------------------------------


def _cleanfid_sqrtm_fd(mu1, s1, mu2, s2) -> float:
    """clean-fid's ``frechet_distance``: ``scipy.linalg.sqrtm`` of Σ1Σ2 (the path issue 8 benchmarks against)."""
    import contextlib
    import io

    from cleanfid.fid import frechet_distance as cleanfid_fd

    with np.errstate(all="ignore"), contextlib.redirect_stdout(io.StringIO()):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return float(cleanfid_fd(mu1, s1, mu2, s2))


def _features(rng, n, d, shift=0.0):
    basis = np.random.default_rng(99).normal(size=(d // 4, d)) / 4.0
    x = (rng.normal(size=(n, d // 4)) * np.linspace(1.5, 0.2, d // 4)) @ basis + 0.3 * rng.normal(size=(n, d))
    return np.maximum(x + 0.5 + shift, 0.0)


@pytest.mark.parametrize("n", [150, 600])  # N < d (low-rank Gram path) and N > d (Σ1 path)
def test_prepared_reference_matches_sqrtm_and_eigenvalue_form(n):
    """evalkit's prepared-reference FD vs clean-fid's scipy sqrtm path (≤ 1e-6 relative at N > d, ≤ 5e-6 at
    N < d) and vs the existing ``frechet_distance`` / ``frechet_distance_from_samples``, at N < d and N > d.

    Tolerances: at N < d, sqrtm and the dense eigenvalue form add d−N+1 = 107 square roots of rounding-level
    eigenvalues that should be 0: up to 107·2·sqrt(eps·‖Σ1Σ2‖)/FD ≈ 6e-7 relative (measured 1.5e-7; their size
    depends on the CPU's LAPACK/BLAS). The exact paths (prepared vs from_samples) differ by the one
    rounding-level eigenvalue each keeps from centring (rank N−1): ≲ 1.2e-8 (measured 3e-10)."""
    from evalkit.metrics.frechet import (
        frechet_distance_from_samples,
        frechet_distance_prepared,
        frechet_distance_to_reference,
        prepare_reference,
    )

    rng = np.random.default_rng(10 + n)
    d = 256
    x, y = _features(rng, n, d, shift=0.05), _features(rng, 900, d)
    m1, s1 = gaussian_stats(x)
    m2, s2 = gaussian_stats(y)
    prep = prepare_reference(m2, s2)
    assert prep.cholesky is not None and prep.rank == d
    sqrtm = _cleanfid_sqrtm_fd(m1, s1, m2, s2)
    ours = frechet_distance_to_reference(x, prep)
    from_stats = frechet_distance_prepared(m1, s1, prep)
    print(f"[agreement] N={n} d={d}: prepared {ours:.12g}, from stats {from_stats:.12g}, sqrtm {sqrtm:.12g}")
    tol_dense = 1e-6 if n > d else 5e-6
    assert abs(ours - sqrtm) / sqrtm <= tol_dense
    assert abs(from_stats - sqrtm) / sqrtm <= tol_dense
    assert ours == pytest.approx(frechet_distance(m1, s1, m2, s2), rel=1e-8 if n > d else 5e-6)
    assert ours == pytest.approx(frechet_distance_from_samples(x, m2, s2), rel=1e-7)


def test_prepared_reference_rank_deficient_reference():
    """A reference with fewer samples than dimensions (Σ_ref singular): the eigenvector factor drops the
    null space (no Cholesky); values still match the sqrtm path and the existing functions."""
    from evalkit.metrics.frechet import frechet_distance_from_samples, frechet_distance_to_reference, prepare_reference

    rng = np.random.default_rng(21)
    d = 96
    y = rng.normal(size=(40, d)) * 0.9
    m2, s2 = gaussian_stats(y)
    prep = prepare_reference(m2, s2)
    assert prep.cholesky is None and prep.rank == 39
    np.testing.assert_allclose(prep.sigma, s2, atol=1e-12)
    r = prep.sqrt_sigma()
    np.testing.assert_allclose(r, r.T, atol=1e-12)
    np.testing.assert_allclose(r @ r, s2, atol=1e-10)
    for n in (30, 300):
        x = rng.normal(size=(n, d)) + 0.1
        m1, s1 = gaussian_stats(x)
        ours = frechet_distance_to_reference(x, prep)
        assert ours == pytest.approx(_cleanfid_sqrtm_fd(m1, s1, m2, s2), rel=1e-6)
        # at n = 300 from_samples is the dense form with rank-39 Σ_ref: 57 rounding-level eigenvalues,
        # ≲ 6e-8 relative (measured 2e-8)
        assert ours == pytest.approx(frechet_distance_from_samples(x, m2, s2), rel=1e-6)


def test_resampled_equals_per_replicate_fd():
    """Bootstrap replicates (repeats) and subsets from the projected rows equal recomputing each FD."""
    from evalkit.metrics.frechet import frechet_distance_from_samples, frechet_distance_resampled, prepare_reference
    from evalkit.metrics.resampling import bootstrap_indices

    rng = np.random.default_rng(22)
    for n, d in ((60, 32), (300, 32)):
        x, y = rng.normal(size=(n, d)) + 0.2, rng.normal(size=(500, d))
        m2, s2 = gaussian_stats(y)
        idx = list(bootstrap_indices(n, 5, 3)) + [rng.permutation(n)[: n // 2]]
        got = frechet_distance_resampled(x, prepare_reference(m2, s2), idx)
        want = [frechet_distance_from_samples(x[i], m2, s2) for i in idx]
        # the 30-row subset (≤ d = 32) is rank 29 after centring: each side may keep one rounding-level
        # eigenvalue, sqrt ≈ 1.5e-8·sqrt(‖Σ1Σ2‖) → ≲ 8e-9 relative
        np.testing.assert_allclose(got, want, rtol=1e-7)


def test_fd_metric_bootstrap_uses_prepared_reference_and_is_cache_independent():
    """The metric's value and CI do not depend on the reference cache's state, and equal the per-replicate
    recomputation with the existing functions."""
    from evalkit.metrics.frechet import clear_reference_cache, frechet_distance_from_samples
    from evalkit.metrics.resampling import bootstrap_indices, percentile_interval

    rng = np.random.default_rng(23)
    gen, ref = rng.normal(size=(150, 24)), rng.normal(size=(400, 24)) + 0.3
    inputs = MetricInputs(gen={"features": gen}, ref={"features": ref}, seed=5, options={"bootstrap": 50})
    clear_reference_cache()
    cold = get_metric("fd").compute(inputs)["fd"]
    warm = get_metric("fd").compute(inputs)["fd"]
    assert (cold.value, cold.ci_low, cold.ci_high) == (warm.value, warm.ci_low, warm.ci_high)
    m2, s2 = gaussian_stats(ref)
    value = frechet_distance_from_samples(gen, m2, s2)
    reps = [frechet_distance_from_samples(gen[i], m2, s2) for i in bootstrap_indices(150, 50, 5)]
    lo, hi = percentile_interval(reps, 0.95, recentre_on=value)
    assert cold.value == pytest.approx(value, rel=1e-9)
    assert (cold.ci_low, cold.ci_high) == pytest.approx((lo, hi), rel=1e-8)
    # no bootstrap at N ≤ d: the direct low-rank path, cold or warm
    small = MetricInputs(gen={"features": gen[:20]}, ref={"features": ref}, options={"bootstrap": 0})
    a = get_metric("fd").compute(small)["fd"].value
    clear_reference_cache()
    b = get_metric("fd").compute(small)["fd"].value
    assert a == b == frechet_distance_from_samples(gen[:20], m2, s2)


def test_fd_inf_prepared_equals_stats_form():
    from evalkit.metrics.fd_inf import fd_infinity
    from evalkit.metrics.frechet import prepare_reference

    rng = np.random.default_rng(24)
    gen = rng.normal(size=(400, 16)) + 0.25
    mu, sig = np.zeros(16), np.eye(16)
    sizes = np.array([100, 200, 400])
    a, fa = fd_infinity(gen, mu, sig, sizes=sizes, seed=1)
    b, fb = fd_infinity(gen, prepare_reference(mu, sig), sizes=sizes, seed=1)
    np.testing.assert_allclose(fa, fb, rtol=1e-12)
    assert a == pytest.approx(b, rel=1e-12)


def test_covariance_route_is_exact_with_a_large_feature_offset():
    """N > d takes the uncentred Gram route, Σ1 = (XᵀX − nμμᵀ)/(n−1): with features offset by 1e3 (a
    mean/std ratio far beyond Inception's or CLIP's) it still equals np.cov + the sqrtm path to 1e-7.

    The cancellation leaves ~eps·|μ|²/var·√n ≈ 1e-8 per entry of Σ1 (how much depends on the BLAS's summation
    order): ~4e-9 relative on this FD, measured 1.9e-9."""
    from scipy.linalg import sqrtm

    from evalkit.metrics.frechet import frechet_distance_to_reference, prepare_reference

    rng = np.random.default_rng(3)
    ref = rng.normal(size=(4000, 64)) * 1.3 + 1e3
    x = rng.normal(size=(3000, 64)) + 1e3 + 0.05
    mu2, s2 = ref.mean(0), np.cov(ref, rowvar=False)
    mu1, s1 = x.mean(0), np.cov(x, rowvar=False)
    expected = float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(sqrtm(s1 @ s2)).real)
    assert frechet_distance_to_reference(x, prepare_reference(mu2, s2)) == pytest.approx(expected, rel=1e-7)


def test_eigensolver_pins_one_blas_thread_only_when_the_cpu_is_oversubscribed(monkeypatch):
    import contextlib

    from evalkit.metrics import threads

    monkeypatch.setattr(threads.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert isinstance(threads.single_thread_blas_when_oversubscribed(), contextlib.nullcontext)
    threadpoolctl = pytest.importorskip("threadpoolctl")
    monkeypatch.setattr(threads.os, "getloadavg", lambda: (1e6, 0.0, 0.0))
    with threads.single_thread_blas_when_oversubscribed():
        assert {i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"} == {1}
