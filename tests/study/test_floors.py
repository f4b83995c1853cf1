"""Noise floors: real samples scored against the rest of the reference, checked against a direct recomputation
and the closed-form expectation; unavailable with a reason; cached; stored in the run folder."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from study_helpers import write_run

from evalkit.store import RunStore, read_run
from evalkit.study import floors as floors_mod
from evalkit.study.floors import at_floor, floors_frame, noise_floors, suite_floors
from evalkit.suite.spec import MetricSpec

FD = MetricSpec("fd", "ex", {})


def gaussian_ref(m: int, d: int, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    return {"ex": {"features": np.random.default_rng(seed).normal(size=(m, d))}}


def fd_direct(x: np.ndarray, ref: np.ndarray) -> float:
    from scipy import linalg

    s1, s2 = np.cov(x, rowvar=False), np.cov(ref, rowvar=False)
    diff = x.mean(0) - ref.mean(0)
    return float(diff @ diff + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))


def test_floor_draws_are_the_documented_disjoint_draws():
    ref = gaussian_ref(300, 4)
    doc = noise_floors([FD], ref, 50, seed=3, draws=4)
    row = doc["rows"][0]
    x = ref["ex"]["features"]
    perm = np.random.default_rng(3).permutation(300)
    want = []
    for d in range(4):
        take = np.zeros(300, bool)
        take[perm[d * 50 : (d + 1) * 50]] = True
        want.append(fd_direct(x[take], x[~take]))
    assert row["values"] == pytest.approx(want, rel=1e-6)
    assert (row["median"], row["low"], row["high"]) == pytest.approx((np.median(want), min(want), max(want)))
    assert (row["draws"], row["n_ref"], doc["n"], doc["seed"]) == (4, 250, 50, 3) and row["available"]


def test_floor_of_a_gaussian_matches_the_closed_form_expectation():
    """Two samples of N(0, I_d), sizes n and m: E[FD] ≈ (d + d(d+1)/4)·(1/n + 1/m) to first order
    (|Δμ|² has expectation d(1/n + 1/m); the Bures term ≈ ‖Σ1 − Σ2‖²_F / 4, whose entries have variance 2/n on
    the diagonal and 1/n off it). The mean over 150 draws has a standard error of ~3 %: allow 4 of them."""
    n, d, draws = 100, 4, 150
    m = n * (draws + 1)
    doc = noise_floors([FD], gaussian_ref(m, d, seed=1), n, seed=0, draws=draws)
    values = np.array(doc["rows"][0]["values"])
    expected = (d + d * (d + 1) / 4) * (1 / (n - 1) + 1 / (m - n - 1))
    assert len(values) == draws
    assert values.mean() == pytest.approx(expected, rel=0.12)


def test_floor_is_unavailable_with_a_reason():
    doc = noise_floors([FD, MetricSpec("kid", "ex", {})], gaussian_ref(100, 3), 100, seed=0)
    assert [r["metric"] for r in doc["rows"]] == ["fd", "kid"]
    assert all(not r["available"] and "100 samples, not more than N=100" in r["reason"] for r in doc["rows"])
    paired = noise_floors([MetricSpec("lpips_paired", "ex", {})], gaussian_ref(500, 3), 10, seed=0)["rows"][0]
    assert not paired["available"] and "no distribution floor" in paired["reason"]
    stats_only = noise_floors([FD], {"ex": {"features.mu": np.zeros(3), "features.sigma": np.eye(3)}}, 10, seed=0)
    assert "stats-only" in stats_only["rows"][0]["reason"]
    # metrics that read no reference have no floor row at all; n must be positive
    assert noise_floors([MetricSpec("is", "ex", {}), MetricSpec("throughput", None, {})], {}, 10, seed=0)["rows"] == []
    with pytest.raises(ValueError, match="n ≥ 1"):
        noise_floors([FD], {}, 0, seed=0)


def test_floors_are_cached_by_what_they_depend_on(tmp_path, monkeypatch):
    ref = gaussian_ref(400, 3)
    first = noise_floors([FD], ref, 50, seed=0, draws=3, cache_dir=tmp_path, key={"reference": "r"})
    assert len(list((tmp_path / "noise-floors").glob("*.json"))) == 1
    monkeypatch.setattr(floors_mod, "_spec_floor", lambda *a: pytest.fail("recomputed a cached floor"))
    assert noise_floors([FD], ref, 50, seed=0, draws=3, cache_dir=tmp_path, key={"reference": "r"}) == first
    monkeypatch.undo()
    other = noise_floors([FD], ref, 60, seed=0, draws=3, cache_dir=tmp_path, key={"reference": "r"})
    assert other["n"] == 60 and len(list((tmp_path / "noise-floors").glob("*.json"))) == 2
    changed = {"ex": {"features": ref["ex"]["features"] + 1e-3}}  # same key, other features: not the cached floor
    again = noise_floors([FD], changed, 50, seed=0, draws=3, cache_dir=tmp_path, key={"reference": "r"})
    assert again["rows"][0]["values"] != first["rows"][0]["values"]


def test_floors_are_stored_in_the_run_folder(tmp_path):
    root = write_run(tmp_path / "run")
    run = read_run(root)
    assert run.floors() is None
    spec = SimpleNamespace(metrics=[FD], samples=run.n, seed=run.seed)
    weights = {"ex": SimpleNamespace(weights_id="w", mode="native")}
    doc = suite_floors(spec, gaussian_ref(500, 3), run.manifest["reference"], weights, None)
    assert doc["reference"]["fingerprint"] == run.manifest["reference"]["fingerprint"] == "abc"
    RunStore(root).write_floors(doc)
    got = read_run(root).floors()
    assert list(got.metric) == ["fd"] and got["median"].iloc[0] == pytest.approx(doc["rows"][0]["median"])
    frame = floors_frame([root])
    assert list(frame.run_id) == [run.run_id] and frame.n.iloc[0] == run.n
    RunStore(root).write_floors({**doc, "n": run.n + 1})  # made for another N: not this run's floors
    assert read_run(root).floors() is None
    other = {**doc, "reference": {**doc["reference"], "fingerprint": "xyz"}}  # against another reference
    RunStore(root).write_floors(other)
    assert read_run(root).floors() is None
    RunStore(root).write_floors({k: v for k, v in doc.items() if k != "reference"})  # cannot say which one
    assert read_run(root).floors() is None
    (root / "floors.json").write_text((root / "floors.json").read_text().replace('"draws"', '"drawz"', 1))
    assert RunStore(root).read_floors() is None  # fails its checksum


def test_at_floor_means_not_confidently_worse_than_real_samples():
    floor = pd.Series({"low": 15.0, "high": 27.0, "median": 20.0})
    nan = math.nan
    assert at_floor(26.0, nan, nan, floor, higher_is_better=False)  # better than the floor's worst draw
    assert at_floor(30.0, 24.0, 36.0, floor, higher_is_better=False)  # its CI overlaps the floor's range
    assert not at_floor(30.0, 28.0, 33.0, floor, higher_is_better=False)  # confidently worse
    assert not at_floor(30.0, nan, nan, floor, higher_is_better=False)
    assert at_floor(10.0, 8.0, 12.0, floor, higher_is_better=False)  # better than real: not worse
    assert at_floor(0.7, 0.6, 0.8, pd.Series({"low": 0.75, "high": 0.8}), higher_is_better=True)
    assert not at_floor(0.6, 0.55, 0.7, pd.Series({"low": 0.75, "high": 0.8}), higher_is_better=True)
    assert not at_floor(10.0, nan, nan, None, higher_is_better=False)
