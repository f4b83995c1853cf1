"""Regression checks on synthetic run folders: protocol hash, noise, paired verdicts, exit codes, outputs.

The run folders are written through the real RunStore with features drawn from Gaussians and metric
rows computed by the real metric code, so every number a check reads is consistent with its features.
A "model" is a mean shift of the feature distribution; the reference sits at 0, so a larger shift is a
worse model (FD, KID up; precision/recall down).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import numpy as np
import pytest

from evalkit.cli import main
from evalkit.gate.baseline import Baseline, BaselineEntry, CheckConfigError, Tolerance, build_baseline, quality_values
from evalkit.gate.compare import IMPROVED, PASS, REGRESSION, compare, verdict
from evalkit.metrics.base import MetricInputs, get_metric
from evalkit.metrics.prdc import prdc
from evalkit.metrics.resampling import metric_replicates
from evalkit.metrics.threads import single_thread_blas as _single_thread_blas
from evalkit.store import RunStore, read_run, tidy_frame
from evalkit.suite import parse_suite
from evalkit.suite.identity import protocol_hash

DIM, N_REF = 8, 300
SUITE = {
    "name": "fake",
    "models": [{"name": "m", "adapter": "zoo"}],
    "samplers": ["ddim", "euler"],
    "steps": [4],
    "guidance": [3],
    "samples": 80,
    "seed": 0,
    "conditions": {"classes": 10},
    "reference": {"dataset": "mnist-heldout"},
    "extractor": "mnist-net",
    "metrics": ["fd", "kid", "is", "pr", "throughput"],
}


def suite(**changes):
    return parse_suite({**SUITE, **changes})


def reference() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(12345)
    return {"features": rng.normal(size=(N_REF, DIM)), "logits": rng.normal(size=(N_REF, 10))}


def write_run(
    root: Path, s, *, shift: float = 0.5, weights_id: str = "w1", skip_cell: str | None = None, jitter: float = 0.0
) -> Path:
    """A finished run folder of suite ``s``: sample i of a cell depends on (seed, cell, i) and ``shift``;
    ``jitter`` moves every sample by its own small random offset (a model that changed a little, sample by
    sample, without a systematic shift)."""
    store, ref, rows = RunStore(root), reference(), []
    with _single_thread_blas():
        _write_cells(store, s, ref, rows, shift, weights_id, skip_cell, jitter)
    store.write_results(tidy_frame(rows))
    store.write_manifest(
        {
            "run_id": f"fake-{s.seed}",
            "suite": s.name,
            "config": s.to_config(),
            "config_hash": s.config_hash(),
            "cells": [c.describe() for c in s.cells()],
            "extractors": {"mnist-net": {"weights_id": weights_id, "mode": "native"}},
            "reference": {"name": "fake-ref", "fingerprint": "abc", "n": N_REF},
            "models": {},
        }
    )
    return root


def _write_cells(store, s, ref, rows, shift, weights_id, skip_cell, jitter=0.0) -> None:
    for cell in s.cells():
        if cell.cell_id == skip_cell:
            continue
        rng = np.random.default_rng([s.seed, zlib.crc32(cell.cell_id.encode())])
        noise = rng.normal(size=(cell.n, DIM))
        feats = {"features": noise + shift, "logits": 3 * rng.normal(size=(cell.n, 10)) * (1 - shift)}
        if jitter:
            feats["features"] = feats["features"] + jitter * np.random.default_rng(99).normal(size=(cell.n, DIM))
        cell_rows = []
        for spec in s.metrics:
            if spec.name == "throughput":
                continue
            out = get_metric(spec.name).compute(MetricInputs(gen=feats, ref=ref, seed=s.seed, options=spec.options))
            cell_rows += [
                {
                    **cell.describe(),
                    "model": cell.model.name,
                    "sampler": cell.sampler.label,
                    "n": cell.n,
                    "seed": s.seed,
                    "metric": row,
                    "value": v.value,
                    "extractor": "mnist-net",
                    "weights_id": weights_id,
                }
                for row, v in out.items()
            ]
        cell_rows.append({**cell.describe(), "metric": "images_per_s", "value": 100.0, "extractor": "", "n": cell.n})
        store.write_cell(
            cell.cell_id,
            {**cell.describe(), "cell_hash": s.cell_hash(cell)},
            features={f"mnist-net/{k}": v for k, v in feats.items()},
            rows=cell_rows,
        )
        rows += cell_rows


K = 6


@pytest.fixture(scope="module")
def baseline_file(tmp_path_factory) -> Path:
    """A baseline over K seed sets of the shift-0.5 model, saved with its feature sidecar."""
    tmp = tmp_path_factory.mktemp("baseline")
    runs = [read_run(write_run(tmp / f"seed-{i}", suite(seed=i))) for i in range(K)]
    b, side = build_baseline(runs, reference_features={"mnist-net": reference()})
    return b.save(tmp / "fake.json", side)


def table(md: str) -> list[dict[str, str]]:
    """The check table's rows as {column header: cell text} (columns found by name, not position)."""
    lines = [line for line in md.splitlines() if line.startswith("|")]  # header, |---|, rows
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    return [dict(zip(header, (x.strip() for x in line.strip("|").split("|")))) for line in lines[2:]]


def interval(text: str) -> tuple[float, float]:
    lo, hi = (float(x) for x in text.strip("[]").split(","))
    return lo, hi


def check(target, baseline_file, *extra) -> int:
    """``evalkit check`` in-process; 50 bootstrap resamples keep the tests fast (the default is 200)."""
    return main(["check", str(target), "--baseline", str(baseline_file), "-q", "--bootstrap", "50", *extra])


# -- the baseline file ------------------------------------------------------------------------------
def test_baseline_holds_value_noise_direction_and_provenance(baseline_file, tmp_path):
    b = Baseline.load(baseline_file)
    doc = json.loads(baseline_file.read_text())
    assert doc["format"] == "evalkit-baseline/1" and doc["seeds"] == list(range(K)) and doc["n"] == 80
    assert doc["extractors"]["mnist-net"]["weights_id"] == "w1"
    assert doc["protocol_hash"] == protocol_hash(suite().to_config())
    assert {e["metric"] for e in doc["entries"]} == {"fd", "kid", "is", "precision", "recall", "density", "coverage"}
    assert len(b.entries) == 2 * 7  # 2 cells × 7 quality rows; throughput is not a quality check
    first = quality_values(read_run(write_run(tmp_path / "again", suite(seed=0)))).droplevel("extractor")
    for e in b.entries:
        assert e.higher_is_better == get_metric(e.metric_def).higher_is_better[e.metric]
        assert doc["entries"][b.entries.index(e)]["direction"] == ("higher" if e.higher_is_better else "lower")
        assert len(e.values) == K and e.value == e.values[0] == pytest.approx(first[(e.cell, e.metric)])
        assert e.sigma == pytest.approx(np.std(e.values, ddof=1)) and e.mean == pytest.approx(np.mean(e.values))
        assert e.sigma > 0
    # the sidecar reproduces the baseline values from its stored per-sample features
    side = b.features()
    assert baseline_file.with_suffix(".npz").stat().st_size < 2_000_000
    fd = next(e for e in b.entries if e.metric == "fd")
    gen = {"features": side[f"cells/{fd.cell}/mnist-net/features"]}
    ref = {"features": side["reference/mnist-net/features"]}
    fd_again = get_metric("fd").compute(MetricInputs(gen=gen, ref=ref))["fd"].value
    assert fd_again == pytest.approx(fd.value, rel=1e-12)


def test_sampling_sigma_of_per_sample_means_matches_the_spread_over_many_seed_sets(baseline_file, tmp_path):
    """Precision and density are means of independent per-generated-sample terms, so their seed-to-seed σ is
    √(var/n), estimated from the K baseline sets' n·K terms. Checked against the std over 400 seed sets of the
    same synthetic model, and the tolerance of an unpaired check uses it where it exceeds the K-set σ."""
    b = Baseline.load(baseline_file)
    for e in b.entries:
        assert (e.sigma_sampling > 0) == (e.metric in ("precision", "density")), e.metric
    cell = b.entries[0].cell
    ref = reference()
    with _single_thread_blas():
        draws = [
            prdc(ref["features"], np.random.default_rng([seed, zlib.crc32(cell.encode())]).normal(size=(80, DIM)) + 0.5)
            for seed in range(400)
        ]
    for metric in ("precision", "density"):
        e = next(x for x in b.entries if x.cell == cell and x.metric == metric)
        spread = float(np.std([d[metric] for d in draws], ddof=1))
        assert e.sigma_sampling == pytest.approx(spread, rel=0.15), (metric, e.sigma_sampling, spread, e.sigma)

    report = compare(b, read_run(write_run(tmp_path / "other", suite(seed=777))), allow_other_seed=True)
    for c in report.comparisons:
        e = c.entry
        assert c.tolerance == pytest.approx(
            e.tolerance.width(max(e.sigma, e.sigma_sampling), e.mean, n_sets=K, paired=False)
        )


def test_tampered_sidecar_is_refused(baseline_file, tmp_path):
    import shutil

    for p in (baseline_file, baseline_file.with_suffix(".npz")):
        shutil.copy(p, tmp_path / p.name)
    data = bytearray((tmp_path / "fake.npz").read_bytes())
    data[100] ^= 0xFF
    (tmp_path / "fake.npz").write_bytes(bytes(data))
    assert check(write_run(tmp_path / "run", suite()), tmp_path / "fake.json") == 2


# -- the protocol -----------------------------------------------------------------------------------
def test_protocol_hash_covers_the_protocol_not_the_model_implementation():
    base = protocol_hash(suite().to_config())
    same = [
        suite(models=[{"name": "m", "adapter": "noise"}]),
        suite(models=[{"name": "m", "adapter": "zoo", "options": {"weights": "untrained"}}]),
        suite(batch_size=7, description="x", grid_samples=3),
        suite(seed=9),
    ]
    changed = [
        suite(steps=[8]),
        suite(samplers=["ddim"]),
        suite(guidance=[2]),
        suite(samples=100),
        suite(metrics=["fd"]),
        suite(reference={"dataset": "mnist-train"}),
        suite(conditions={"classes": 5}),
        suite(models=[{"name": "other", "adapter": "zoo"}]),
    ]
    assert all(protocol_hash(s.to_config()) == base for s in same)
    assert len({protocol_hash(s.to_config()) for s in changed} | {base}) == len(changed) + 1


def test_baseline_from_another_protocol_is_refused_with_the_difference(baseline_file, tmp_path, capsys):
    run = write_run(tmp_path / "run", suite(steps=[8]))
    junit = tmp_path / "j.xml"
    assert check(run, baseline_file, "--junit", str(junit)) == 2
    err = capsys.readouterr().err
    assert "protocol hash" in err and "steps: baseline [4] != run [8]" in err
    root = ET.parse(junit).getroot()
    assert root.find("testsuite").get("errors") == "1" and root.find(".//error") is not None


def test_a_changed_model_under_the_same_protocol_is_judged(baseline_file, tmp_path):
    s = suite(models=[{"name": "m", "adapter": "noise", "options": {"resolution": 32}}])
    assert check(write_run(tmp_path / "run", s), baseline_file) == 0


def test_other_seed_needs_to_be_asked_for_and_is_then_unpaired(baseline_file, tmp_path, capsys):
    run = write_run(tmp_path / "run", suite(seed=100))
    assert check(run, baseline_file) == 2
    assert "seed 100 != baseline seed 0" in capsys.readouterr().err
    assert check(run, baseline_file, "--seed", "100") == 0
    out = capsys.readouterr().out
    assert "unpaired" in out and "paired on common seeds" not in out


def test_other_extractor_weights_and_missing_cells_are_listed(baseline_file, tmp_path, capsys):
    assert check(write_run(tmp_path / "w", suite(), weights_id="w2"), baseline_file) == 2
    assert "extractor mnist-net: weights w2 != baseline w1" in capsys.readouterr().err
    run = write_run(tmp_path / "m", suite(), skip_cell="m__euler__s4__g3")
    assert check(run, baseline_file) == 2
    assert "cells missing from the run: m__euler__s4__g3" in capsys.readouterr().err


# -- verdicts ---------------------------------------------------------------------------------------
def _junit(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    return root.find("testsuite")


def test_same_model_same_seeds_passes_with_zero_delta(baseline_file, tmp_path, capsys):
    junit = tmp_path / "out" / "j.xml"
    assert check(write_run(tmp_path / "run", suite()), baseline_file, "--junit", str(junit)) == 0
    md = capsys.readouterr().out
    assert "PASS" in md and "paired on common seeds" in md
    table = [line for line in md.splitlines() if line.startswith("| m__")]
    assert len(table) == 14 and all("| +0 |" in line and "[+0, +0]" in line for line in table)
    ts = _junit(junit)
    assert (ts.get("tests"), ts.get("failures"), ts.get("errors")) == ("14", "0", "0")
    assert len(ts.findall("testcase")) == 14 and not ts.findall(".//failure")


def test_degraded_model_fails_with_a_paired_ci_clear_of_zero(baseline_file, tmp_path, capsys, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    junit = tmp_path / "j.xml"
    assert check(write_run(tmp_path / "run", suite(), shift=1.0), baseline_file, "--junit", str(junit)) == 1
    md = capsys.readouterr().out
    assert "FAIL" in md
    fd_rows = [r for r in table(md) if r["metric"] == "fd ↓"]
    assert len(fd_rows) == 2
    for r in fd_rows:
        lo, hi = interval(r["paired CI"])
        assert "REGRESSION" in r["verdict"] and float(r["delta"]) > float(r["tolerance"]) > 0 and 0 < lo <= hi
    ts = _junit(junit)
    failed = [c for c in ts.findall("testcase") if c.find("failure") is not None]
    assert int(ts.get("failures")) == len(failed) >= 2
    assert {c.get("name") for c in failed} >= {"fd[mnist-net]"}
    assert all("regression" in c.find("failure").get("message") for c in failed)
    assert summary.read_text().startswith("earlier step\n### evalkit check `fake`: FAIL")


def test_improvement_is_reported_never_failed(baseline_file, tmp_path, capsys):
    assert check(write_run(tmp_path / "run", suite(), shift=0.0), baseline_file) == 0
    md = capsys.readouterr().out
    rows = table(md)
    improved = [r for r in rows if "improved" in r["verdict"]]
    assert "PASS" in md and improved and not any("REGRESSION" in r["verdict"] for r in rows)
    for r in improved:  # better by more than the tolerance, CI clear of zero on the better side
        sign = 1 if "↑" in r["metric"] else -1
        lo, _ = sorted(sign * x for x in interval(r["paired CI"]))
        assert sign * float(r["delta"]) > float(r["tolerance"]) and lo > 0


def test_a_failed_cell_is_an_error(baseline_file, tmp_path, capsys):
    run = write_run(tmp_path / "run", suite())
    RunStore(run).write_failed_cell("m__euler__s4__g3", {}, "Traceback...\nRuntimeError: NaN in samples")
    RunStore(run).write_results(read_run(run).results)  # the runner exports the rows of the finished cells
    assert check(run, baseline_file) == 1
    assert "ERROR** (cell failed: RuntimeError: NaN in samples)" in capsys.readouterr().out


def _entry(higher: bool) -> BaselineEntry:
    return BaselineEntry("c", "m", "s", 4, 3.0, "x", "x", "e", higher, 1.0, 1.0, 0.1, [1.0], Tolerance())


@pytest.mark.parametrize("higher", [False, True])
def test_verdict_needs_both_the_tolerance_and_the_paired_ci(higher):
    e, worse = _entry(higher), (-1 if higher else 1)
    hib = e.higher_is_better
    assert verdict(worse * 0.5, 0.3, (worse * 0.1, worse * 0.9), higher_is_better=hib) == REGRESSION
    assert verdict(worse * 0.5, 0.3, None, higher_is_better=hib) == REGRESSION  # unpaired: tolerance alone
    assert verdict(worse * 0.5, 0.3, (worse * -0.1, worse * 0.9), higher_is_better=hib) == PASS  # CI covers 0
    assert verdict(worse * 0.2, 0.3, (worse * 0.1, worse * 0.3), higher_is_better=hib) == PASS  # within tolerance
    assert verdict(-worse * 0.5, 0.3, (-worse * 0.1, -worse * 0.9), higher_is_better=hib) == IMPROVED


def test_k_override_changes_the_tolerance(baseline_file, tmp_path, capsys):
    run = write_run(tmp_path / "run", suite(), shift=1.0)
    assert check(run, baseline_file, "--k", "1000") == 0  # nothing exceeds a 1000σ tolerance


def test_fast_prdc_replicates_equal_the_metric_on_the_resampled_set():
    rng = np.random.default_rng(0)
    ref, gen = rng.normal(size=(80, 5)), rng.normal(size=(60, 5)) + 0.2
    idx = rng.integers(0, 60, size=(4, 60))
    inputs = MetricInputs(gen={"features": gen}, ref={"features": ref}, options={"k": 3})
    reps = get_metric("pr").replicates(inputs, idx)
    assert reps.keys() == metric_replicates(get_metric("pr"), inputs, idx).keys()
    for b, ix in enumerate(idx):
        direct = prdc(ref, gen[ix], k=3)
        for name, value in direct.items():
            assert reps[name][b] == pytest.approx(value, abs=1e-12), name


def test_fast_kid_replicates_equal_the_metric_on_the_resampled_set():
    rng = np.random.default_rng(1)
    ref, gen = rng.normal(size=(90, 5)), rng.normal(size=(50, 5)) + 0.3
    idx = rng.integers(0, 50, size=(3, 50))
    kid = get_metric("kid")
    inputs = MetricInputs(gen={"features": gen}, ref={"features": ref}, seed=4, options={"subsets": 7})
    reps = kid.replicates(inputs, idx)["kid"]
    for b, ix in enumerate(idx):
        one = MetricInputs(gen={"features": gen[ix]}, ref={"features": ref}, seed=4, options={"subsets": 7})
        assert reps[b] == pytest.approx(kid.compute(one)["kid"].value, rel=1e-9, abs=1e-12)
    subset = MetricInputs(
        gen={"features": gen}, ref={"features": ref}, seed=4, options={"subsets": 7, "subset_size": 20}
    )
    assert kid.replicates(subset, idx) is None  # subsets of a subset: no fast path, the generic one recomputes
    assert metric_replicates(kid, subset, idx)["kid"].shape == (3,)


def test_generic_replicates_recompute_the_metric_on_each_resample():
    """Metrics without a fast path (FD, IS) are recomputed per resample; FD against its reference's Gaussian
    fitted once, which gives the same value as fitting it each time."""
    rng = np.random.default_rng(2)
    ref, gen = rng.normal(size=(70, 4)), rng.normal(size=(40, 4)) + 0.3
    logits = rng.normal(size=(40, 10))
    idx = rng.integers(0, 40, size=(3, 40))
    inputs = MetricInputs(gen={"features": gen, "logits": logits}, ref={"features": ref}, seed=1)
    for name, opts in (("fd", {"bootstrap": 0}), ("is", {})):
        defn = get_metric(name)
        assert defn.replicates is None
        reps = metric_replicates(defn, inputs, idx)[name]
        for b, ix in enumerate(idx):
            one = MetricInputs(
                gen={"features": gen[ix], "logits": logits[ix]}, ref={"features": ref}, seed=1, options=opts
            )
            assert reps[b] == pytest.approx(defn.compute(one)[name].value, rel=1e-9)


def test_build_baseline_refuses_mixed_protocols(tmp_path):
    runs = [read_run(write_run(tmp_path / "a", suite())), read_run(write_run(tmp_path / "b", suite(steps=[8], seed=1)))]
    with pytest.raises(CheckConfigError, match="protocol differs"):
        build_baseline(runs)


# -- the pytest plugin ------------------------------------------------------------------------------
pytest_plugins = ["pytester"]


def _plugin_args() -> list[str]:
    from importlib.metadata import entry_points

    registered = any(ep.name == "evalkit" for ep in entry_points(group="pytest11"))
    return [] if registered else ["-p", "evalkit.gate.pytest_plugin"]


def test_pytest_plugin_fails_a_regression_with_the_table(baseline_file, tmp_path, pytester):
    good, bad = write_run(tmp_path / "good", suite()), write_run(tmp_path / "bad", suite(), shift=1.0)
    pytester.makepyfile(f"""
        def test_good(evalkit_check):
            report = evalkit_check({str(good)!r}, {str(baseline_file)!r}, n_resamples=50)
            assert report.exit_code == 0

        def test_bad(evalkit_check):
            evalkit_check({str(bad)!r}, {str(baseline_file)!r}, n_resamples=50)
    """)
    result = pytester.runpytest_inprocess(*_plugin_args())
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*evalkit check `fake`: FAIL*", "*| fd ↓ |*REGRESSION*"])
