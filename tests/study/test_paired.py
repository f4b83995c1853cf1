"""The paired core: recentred intervals contain their point, the tie rule, and one core for check and study."""

from __future__ import annotations

import numpy as np
import pytest
from study_helpers import EX, reference, suite, write_run

from evalkit.metrics.resampling import percentile_interval
from evalkit.store import read_run
from evalkit.study.compare import compare_cells
from evalkit.study.paired import BETTER, TIE, WORSE, pair_verdict


def test_recentred_interval_always_contains_its_point():
    skewed = np.array([0.0] * 99 + [1000.0])  # mean 10: shifted onto 0 the percentiles sit at −10 and −10
    lo, hi = percentile_interval(skewed, 0.95, recentre_on=0.0)
    assert lo <= 0.0 <= hi and lo == pytest.approx(-10.0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        reps = rng.lognormal(sigma=2.0, size=rng.integers(5, 60))
        point = float(rng.normal(scale=5.0))
        lo, hi = percentile_interval(reps, rng.uniform(0.5, 0.99), recentre_on=point)
        assert lo <= point <= hi
    plain = percentile_interval(skewed, 0.95)  # without a point nothing is widened
    assert plain == (0.0, pytest.approx(np.quantile(skewed, 0.975)))


def test_the_verdict_needs_the_ci_to_exclude_zero():
    assert pair_verdict((-3.0, -1.0), higher_is_better=False) == BETTER  # a − b < 0 on a lower-is-better metric
    assert pair_verdict((-3.0, -1.0), higher_is_better=True) == WORSE
    assert pair_verdict((-3.0, 1.0), higher_is_better=False) == TIE
    assert pair_verdict((0.0, 0.0), higher_is_better=False) == TIE
    assert pair_verdict((float("nan"), 1.0), higher_is_better=False) == TIE
    assert pair_verdict(None, higher_is_better=True) == TIE


def test_check_and_study_give_the_same_paired_interval(tmp_path):
    """`evalkit check` (run against baseline) and the study (cell against cell) share the paired core: the same
    pair of feature sets gets the same interval from both."""
    from evalkit.gate.baseline import build_baseline
    from evalkit.gate.compare import compare

    s = suite(samplers=["ddim", "heun"], steps=[4], metrics=["fd", "throughput"])
    runs = [read_run(write_run(tmp_path / f"seed-{i}", suite(**_same(s), seed=i), run_id=f"b{i}")) for i in (0, 1)]
    baseline, sidecar = build_baseline(runs, reference_features={EX: reference()})
    path = baseline.save(tmp_path / "b.json", sidecar)
    now = read_run(write_run(tmp_path / "now", s, shifts={"ddim": 0.5, "heun": 0.3}, run_id="now"))
    report = compare(type(baseline).load(path), now, n_resamples=60)
    for c in report.comparisons:
        pair = compare_cells(
            [now, runs[0]],
            "fd",
            n_resamples=60,
            pairs=[(("now", c.entry.cell), ("b0", c.entry.cell))],
            reference={EX: reference()},
        ).iloc[0]
        assert pair.basis == "paired bootstrap" and pair["diff"] == pytest.approx(c.delta, rel=1e-9)
        assert (pair.ci_low, pair.ci_high) == pytest.approx(c.ci, rel=1e-9)


def _same(s) -> dict:
    cfg = s.to_config()
    return {"samplers": [x["label"] for x in cfg["samplers"]], "steps": cfg["steps"], "metrics": ["fd", "throughput"]}
