"""Seeded percentile bootstrap and paired comparisons."""

from __future__ import annotations

import numpy as np
import pytest

from evalkit.metrics.resampling import bootstrap_ci, bootstrap_mean_ci, percentile_interval


def test_bootstrap_mean_ci_is_seeded_and_covers_the_mean():
    x = np.random.default_rng(0).normal(loc=3.0, size=400)
    a = bootstrap_mean_ci(x, seed=1)
    assert a == bootstrap_mean_ci(x, seed=1)
    assert a != bootstrap_mean_ci(x, seed=2)
    assert a[0] < x.mean() < a[1]
    # ~ mean ± 1.96 σ/√n
    assert (a[1] - a[0]) == pytest.approx(2 * 1.96 * x.std() / np.sqrt(x.size), rel=0.15)


def test_bootstrap_ci_general_statistic_matches_vectorised_mean():
    x = np.random.default_rng(3).normal(size=100)
    assert bootstrap_ci(lambda idx: x[idx].mean(), x.size, seed=5, n_resamples=300) == pytest.approx(
        bootstrap_mean_ci(x, seed=5, n_resamples=300)
    )


def test_percentile_interval_recentring():
    reps = np.array([10.0, 11.0, 12.0, 13.0, 14.0])
    lo, hi = percentile_interval(reps, 0.5, recentre_on=2.0)
    assert (lo + hi) / 2 == pytest.approx(2.0)
