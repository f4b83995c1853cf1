"""One verdict: ``evalkit report --baseline`` and ``evalkit check`` judge the same run + baseline the same way.

The report used to call a delta 'worse' beyond ±2 noise units, while the gate asks for more than its
t-quantile tolerance and, on common seeds, a paired bootstrap CI clear of 0. Each test builds a run and a
baseline on which that old report rule and the gate disagreed, and shows that the report's deltas now carry
the gate's verdicts (in the report's words), tolerances and CIs.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from test_check import reference, suite, write_run  # the synthetic run folders of the gate tests

from evalkit.gate.baseline import Baseline, BaselineEntry, Tolerance, build_baseline, quality_values
from evalkit.gate.commands import run_check
from evalkit.gate.compare import ERROR, IMPROVED, PASS, REGRESSION, CheckReport
from evalkit.report.baseline import BaselineError, deltas, load_baseline
from evalkit.report.data import load_results
from evalkit.store import read_run

SETS = 3  # seed sets in the baseline: few, so the gate's t-quantile tolerance is wide (k_eff ≈ 19 for k = 3)
RESAMPLES = 50


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, Baseline, dict[str, np.ndarray]]:
    tmp = tmp_path_factory.mktemp("one-verdict")
    runs = [read_run(write_run(tmp / f"seed-{i}", suite(seed=i))) for i in range(SETS)]
    baseline, sidecar = build_baseline(runs, reference_features={"mnist-net": reference()})
    return tmp, baseline, sidecar


def edited(made, path: Path, edit: Callable[[BaselineEntry], None]) -> Path:
    """The module's baseline with every entry edited, saved (with its feature sidecar) at ``path``."""
    _, baseline, sidecar = made
    b = copy.deepcopy(baseline)
    for e in b.entries:
        edit(e)
    return b.save(path, sidecar)


def old_report_rule(delta: float, noise: float, higher_is_better: bool) -> str:
    """What report/baseline.py said before: 'within noise' inside ±2 noise units, else better/worse."""
    if delta == 0:
        return "unchanged"
    z = delta / noise if noise > 0 else math.nan
    if not math.isnan(z) and abs(z) <= 2:
        return "within noise"
    return "better" if (delta > 0) == higher_is_better else "worse"


WORDS = {PASS: "within noise", REGRESSION: "worse", IMPROVED: "better", ERROR: "error"}


def both(run: Path, baseline: Path, *, runs: list | None) -> tuple[dict, CheckReport]:
    """The report's deltas (by cell key) and ``evalkit check RUN --baseline B`` on the same inputs."""
    base, _ = load_baseline(baseline)
    d = deltas(load_results(run), base, runs=runs, n_resamples=RESAMPLES)
    rows = {(r.model, r.sampler, int(r.steps), float(r.guidance), r.metric): r for r in d.itertuples()}
    return rows, run_check(run, baseline, n_resamples=RESAMPLES)


def assert_one_verdict(rows: dict, report: CheckReport, *, with_ci: bool = True) -> None:
    """Every entry: the report's verdict is check's, and so are its reference point, delta and tolerance (and
    the paired CI, where the report was given the run folder)."""
    assert len(rows) == len(report.comparisons) == 14
    for c in report.comparisons:
        e = c.entry
        r = rows[(e.model, e.sampler, e.steps, e.guidance, e.metric)]
        word = "unchanged" if c.verdict == PASS and c.delta == 0 else WORDS[c.verdict]
        assert r.verdict == word, (e.key, r.verdict, c.verdict)
        assert (r.baseline, r.delta, r.tolerance) == pytest.approx((c.reference, c.delta, c.tolerance), rel=1e-12)
        if with_ci:
            assert (r.ci_low, r.ci_high) == pytest.approx(c.ci if c.ci else (math.nan, math.nan), nan_ok=True)


def test_a_delta_between_two_sigma_and_the_t_tolerance_is_within_noise_for_both(made, tmp_path):
    """Every entry moved by 3σ: the old report said worse/better, the gate (k=3 → k_eff ≈ 19 with 3 seed
    sets) passes. The report now says 'within noise', with the gate's tolerance, run folder given or not."""
    run = write_run(tmp_path / "run", suite(), shift=0.6)
    now = quality_values(read_run(run))

    def three_sigma(e: BaselineEntry) -> None:
        e.sigma, e.sigma_sampling, e.tolerance = abs(now[e.key] - e.value) / 3, 0.0, Tolerance(k=3, rel=0.0)

    baseline = edited(made, tmp_path / "b.json", three_sigma)
    for runs in (None, [run]):
        rows, report = both(run, baseline, runs=runs)
        assert report.paired and report.exit_code == 0
        assert {c.verdict for c in report.comparisons} == {PASS}
        assert_one_verdict(rows, report, with_ci=runs is not None)
        for c in report.comparisons:
            r = rows[(c.entry.model, c.entry.sampler, c.entry.steps, c.entry.guidance, c.entry.metric)]
            assert r.verdict == "within noise" and r.tolerance == pytest.approx(c.tolerance)
            assert r.z == pytest.approx(math.copysign(3.0, c.delta))
            assert old_report_rule(c.delta, c.entry.noise, c.entry.higher_is_better) in ("worse", "better")


def test_a_paired_ci_that_includes_zero_passes_for_both(made, tmp_path):
    """A model that changed a little, sample by sample: with no tolerance at all every delta is beyond it, yet
    where the paired CI straddles 0 the gate passes. The old report (no noise → no 'within noise') said
    worse/better there; the report, given the run folder, now takes check's paired CI and verdict."""
    run = write_run(tmp_path / "run", suite(), jitter=0.05)

    def no_tolerance(e: BaselineEntry) -> None:
        e.sigma, e.sigma_sampling, e.tolerance = 0.0, 0.0, Tolerance(k=3, rel=0.0, abs=0.0)

    rows, report = both(run, edited(made, tmp_path / "b.json", no_tolerance), runs=[run])
    assert report.paired
    assert_one_verdict(rows, report)
    saved = [c for c in report.comparisons if abs(c.delta) > c.tolerance and c.verdict == PASS]
    assert saved, [(c.entry.metric, c.delta, c.ci) for c in report.comparisons]
    for c in saved:
        assert c.ci is not None and c.ci[0] <= 0 <= c.ci[1]
        assert old_report_rule(c.delta, c.entry.noise, c.entry.higher_is_better) in ("worse", "better")


def test_a_hand_written_baseline_is_judged_by_the_gate_rule_with_default_tolerance(made, tmp_path):
    """Only a value and a noise σ: unpaired, one draw against one, σ known: tol = max(3·σ·√2, 2 %·|baseline|).
    2.5σ was 'worse' under the old ±2σ rule and is within that tolerance; 5σ is beyond it."""
    tmp, _, _ = made
    df = load_results(tmp / "seed-0")
    fd = df[df.metric == "fd"].set_index("sampler")["value"]
    sigma = {s: 0.05 * fd[s] for s in fd.index}
    moved = {"ddim": 2.5, "euler": 5.0}
    doc = {
        "cells": {
            f"m__{s}__s4__g3": {"fd": {"value": fd[s] - moved[s] * sigma[s], "noise": sigma[s], "direction": "lower"}}
            for s in moved
        }
    }
    (tmp_path / "b.json").write_text(json.dumps(doc))
    d = deltas(df, load_baseline(tmp_path / "b.json")[0]).set_index("sampler")
    for s, z in moved.items():
        tol = Tolerance().width(sigma[s], fd[s] - z * sigma[s], n_sets=1, paired=False)
        assert tol == pytest.approx(3 * math.sqrt(2) * sigma[s])
        assert d.loc[s, "tolerance"] == pytest.approx(tol) and d.loc[s, "z"] == pytest.approx(z)
        assert not d.loc[s, "paired"] and math.isnan(d.loc[s, "ci_low"])
        assert old_report_rule(z * sigma[s], sigma[s], False) == "worse"
    assert (d.loc["ddim", "verdict"], d.loc["euler", "verdict"]) == ("within noise", "worse")


def test_the_report_reads_evalkit_baselines_with_the_gate_loader(made, tmp_path):
    _, baseline, sidecar = made
    path = copy.deepcopy(baseline).save(tmp_path / "b.json", sidecar)
    base, name = load_baseline(path)
    assert isinstance(base.attrs["evalkit_baseline"], Baseline) and "fake" in name
    assert list(base.noise) == [e.noise for e in baseline.entries]
    doc = json.loads(path.read_text())
    del doc["entries"][0]["direction"]
    path.write_text(json.dumps(doc))
    with pytest.raises(BaselineError, match="is malformed"):  # the gate's message: one reader of the format
        load_baseline(path)
