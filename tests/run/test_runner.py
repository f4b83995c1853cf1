"""The runner on the built-in model: batch-size invariance, resume after a kill, fault isolation."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from evalkit.cli import main
from evalkit.generate import GenerationRequest, zoo_adapter
from evalkit.run.images import ImageContractError, check_images
from evalkit.store import RESULT_COLUMNS, RunStore
from evalkit.suite import load_suite


def _collect(adapter, sampler, batch_size, n=32, guidance=3.0, steps=8):
    req = GenerationRequest(
        indices=np.arange(n),
        seed=0,
        sampler=sampler,
        steps=steps,
        guidance=guidance,
        batch_size=batch_size,
        labels=np.arange(n) % 10,
    )
    return torch.cat([b.images for b in adapter.generate(req)])


@pytest.fixture(scope="module")
def mnist():
    return zoo_adapter.ZooMnistAdapter()


def test_initial_noise_is_identical_across_batch_sizes(mnist, monkeypatch):
    seen: dict[int, list[torch.Tensor]] = {}
    real = zoo_adapter.initial_noise

    def spy(gens, shape):
        out = real(gens, shape)
        seen.setdefault(current, []).append(out)
        return out

    monkeypatch.setattr(zoo_adapter, "initial_noise", spy)
    for current in (7, 32):
        _collect(mnist, "ddim", current, steps=2)
    assert len(seen[7]) == 5 and len(seen[32]) == 1
    assert torch.equal(torch.cat(seen[7]), torch.cat(seen[32]))  # exact


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp_2m", "heun", "euler", "unipc"])
def test_images_do_not_depend_on_batch_size(mnist, sampler):
    a, b = _collect(mnist, sampler, 7), _collect(mnist, sampler, 32)
    diff = (a.int() - b.int()).abs()
    assert diff.max() <= 255  # sanity: same shape and dtype compare
    assert (diff <= 1).float().mean().item() >= 0.999, f"{sampler}: max diff {diff.max().item()}"


def test_check_images_names_cell_and_samples():
    imgs = torch.rand(4, 3, 8, 8)
    imgs[2, 0, 0, 0] = float("nan")
    with pytest.raises(ImageContractError, match=r"cell c1, samples 10\.\.13: NaN/Inf in samples \[12\]"):
        check_images(imgs, "c1", np.arange(10, 14))
    with pytest.raises(ImageContractError, match=r"expected images of shape \(B, 3, H, W\); got \(4, 1, 8, 8\)"):
        check_images(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), "c1", np.arange(4))
    with pytest.raises(ImageContractError, match=r"must lie in \[0, 1\]; samples \[1\]"):
        check_images(torch.tensor([0.5, 2.0]).view(2, 1, 1, 1).expand(2, 3, 2, 2).contiguous(), "c1", np.arange(2))
    # floats are rounded, not truncated
    out = check_images(torch.full((1, 3, 1, 1), 0.999), "c1", np.arange(1))
    assert out.dtype == torch.uint8 and out[0, 0, 0, 0].item() == 255


SMALL = """\
name: small
models: [{{name: mnist, adapter: zoo}}]
samplers: [ddim, dpmpp_2m]
steps: [{steps}]
guidance: [1, 3]
samples: {n}
batch_size: 25
conditions: {{classes: 10}}
reference: {{dataset: mnist-heldout}}
extractor: mnist-net
metrics: [fd, kid, is, pr, throughput]
grid_samples: 10
timing: {{repeats: 1}}  # one timed batch: these tests check results, not timing (tests/run/test_timing_discipline.py)
"""


def _suite(tmp_path, steps="2, 6", n=50):
    p = tmp_path / "small.yaml"
    p.write_text(SMALL.format(steps=steps, n=n))
    return p


def test_run_writes_tidy_results_and_provenance(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(_suite(tmp_path, steps="3", n=30)), "--out", str(out), "-q"]) == 0
    df = pd.read_parquet(out / "results.parquet")
    assert list(df.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert set(df.metric) >= {
        "fd",
        "kid",
        "is",
        "precision",
        "recall",
        "images_per_s",
        "s_per_image",
        "model_calls",
        "nfe",
        "ms_per_model_call",
        "peak_mem_mb",
    }
    assert len(df[df.metric == "fd"]) == 4  # 2 samplers × 1 steps × 2 guidance
    nfe = df[df.metric == "nfe"].set_index("guidance")["value"]
    calls = df[df.metric == "model_calls"].set_index("guidance")["value"]
    assert (calls == 3).all() and (nfe.loc[3.0] == 6).all() and (nfe.loc[1.0] == 3).all()
    fd_rows = df[df.metric == "fd"]
    assert (fd_rows.extractor == "mnist-net").all() and fd_rows.weights_id.str.len().min() >= 16
    assert (df.n == 30).all() and (df.seed == 0).all() and df.n.dtype.kind == "i"
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["config_hash"] == load_suite(_suite(tmp_path, steps="3", n=30)).config_hash()
    assert {"torch", "diffusers", "numpy"} <= set(manifest["environment"]["packages"])
    assert manifest["status"] == {"done": 4, "failed": 0, "total": 4}
    assert manifest["reference"]["n"] == 1000
    cell = next(RunStore(out).iter_cells())
    assert (out / "cells" / os.path.basename(cell["_dir"]) / "grid.png").stat().st_size > 100
    printed = capsys.readouterr().out  # the summary: every metric, with the N
    assert all(name in printed for name in ("FD", "KID", "IS", "precision", "recall", "N=30"))


def test_run_json_and_cells_record_every_models_weights(tmp_path):
    """Each model's adapter info (the zoo's weight-file hashes) lands in run.json and in its cells,
    also for models that are no longer in memory when the run ends (one model is loaded at a time)."""
    from evalkit.zoo import model_card

    suite = tmp_path / "two.yaml"
    suite.write_text(
        SMALL.format(steps=2, n=10)
        .replace(
            "models: [{name: mnist, adapter: zoo}]",
            "models: [{name: mnist, adapter: zoo}, {name: noise, adapter: noise}]",
        )
        .replace("samplers: [ddim, dpmpp_2m]", "samplers: [ddim]")
        .replace("guidance: [1, 3]", "guidance: [1]")
    )
    out = tmp_path / "run"
    assert main(["run", str(suite), "--out", str(out), "-q"]) == 0
    files = model_card()["models"]["mnist-unet"]["files"]
    shipped = {name: meta["sha256"] for name, meta in files.items()}
    models = json.loads((out / "run.json").read_text())["models"]
    assert set(models) == {"mnist", "noise"} and models["mnist"]["weights_sha256"] == shipped
    cells = {c["model"]: c for c in RunStore(out).iter_cells()}
    assert cells["mnist"]["model_info"]["weights_sha256"] == shipped
    assert cells["noise"]["model_info"]["adapter"] == "noise"
    assert main(["run", str(suite), "--out", str(out), "-q"]) == 0  # resumed: nothing rebuilt, nothing lost
    assert json.loads((out / "run.json").read_text())["models"] == models


def weights_file_adapter(device="cpu", weights=""):
    """A plugin adapter whose weights are one file: its info() names them by sha256, as the zoo's does."""
    from evalkit.generate.zoo_adapter import NoiseAdapter

    class FileWeights(NoiseAdapter):
        def info(self):
            return {**super().info(), "weights_sha256": hashlib.sha256(Path(weights).read_bytes()).hexdigest()}

    return FileWeights(device=device)


def test_resume_refuses_cells_made_by_other_weights(tmp_path, monkeypatch, capsys):
    """The suite (and so each cell's hash) is unchanged when the weights behind a model are retrained in place:
    resuming must not mix the old model's finished cells with the new model's."""
    weights = tmp_path / "w.bin"
    weights.write_bytes(b"first training run")
    suite = tmp_path / "w.yaml"
    suite.write_text(
        textwrap.dedent(f"""\
        name: w
        models: [{{name: m, adapter: "{__name__}:weights_file_adapter", options: {{weights: "{weights}"}}}}]
        samplers: [ddim, euler]
        steps: [2]
        samples: 10
        reference: {{dataset: mnist-heldout, samples: 100}}
        extractor: mnist-net
        metrics: [fd]
    """)
    )
    monkeypatch.syspath_prepend(os.path.dirname(__file__))
    out = tmp_path / "run"
    run = ["run", str(suite), "--out", str(out), "-q"]
    assert main(run) == 0
    kept, redo = out / "cells" / "m__ddim__s2__g1" / "cell.json", out / "cells" / "m__euler__s2__g1"
    before = kept.read_bytes()
    shutil.rmtree(redo)  # one cell left to compute
    capsys.readouterr()

    weights.write_bytes(b"second training run")
    assert main(run) == 2
    err = capsys.readouterr().err
    assert "model 'm' has other weights than when 1 finished cell(s)" in err and "m__ddim__s2__g1" in err, err
    assert "Traceback" not in err
    assert kept.read_bytes() == before and not (redo / "cell.json").exists()  # nothing lost, nothing mixed

    weights.write_bytes(b"first training run")  # the same weights again: the run resumes
    assert main(run) == 0
    assert "1 cells computed, 1 reused" in capsys.readouterr().out
    assert kept.read_bytes() == before


def _cells_done(run_dir):
    return sorted(
        p.parent.name for p in run_dir.glob("cells/*/cell.json") if json.loads(p.read_text()).get("status") == "done"
    )


def test_killed_run_resumes_without_recomputing(tmp_path):
    suite = _suite(tmp_path, steps="2, 6", n=30)
    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "evalkit", "run", str(suite), "--out", str(out), "-q"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while time.time() < deadline and len(_cells_done(out)) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = _cells_done(out)
    assert 2 <= len(finished) < 8, "the kill must land mid-run"
    # the table is rewritten after each cell: it holds the finished cells (the last one possibly not yet)
    exported = set(pd.read_parquet(out / "results.parquet").cell_id)
    assert exported <= set(finished) and len(exported) >= len(finished) - 1
    stamps = {c: (out / "cells" / c / "cell.json").stat().st_mtime_ns for c in finished}
    res = subprocess.run(
        [sys.executable, "-m", "evalkit", "run", str(suite), "--out", str(out), "-q"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert f"{8 - len(finished)} cells computed, {len(finished)} reused" in res.stdout
    assert {c: (out / "cells" / c / "cell.json").stat().st_mtime_ns for c in finished} == stamps
    assert len(_cells_done(out)) == 8
    # that resumed results equal an uninterrupted run's, bit for bit, is checked under repeated random
    # SIGKILLs in tests/e2e/test_reliability_crash.py


def test_quality_rises_with_steps_on_the_builtin_model(tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(_suite(tmp_path, steps="2, 8", n=60)), "--out", str(out), "-q"]) == 0
    fd = pd.read_parquet(out / "results.parquet").query("metric == 'fd'")
    for (sampler, g), grp in fd.groupby(["sampler", "guidance"]):
        by_steps = grp.set_index("steps")["value"]
        assert by_steps[8] < by_steps[2], f"{sampler} g={g}: {by_steps.to_dict()}"


def broken_adapter(device="cpu", fail_sampler="dpmpp_2m"):
    """A plugin adapter that raises on one sampler: the other cells must still finish."""
    from evalkit.generate.zoo_adapter import NoiseAdapter

    class Broken(NoiseAdapter):
        def generate(self, request):
            if request.sampler == fail_sampler and len(request.indices) > 1:
                raise RuntimeError("boom on purpose")
            yield from super().generate(request)

    return Broken(device=device)


def test_a_failing_cell_does_not_stop_the_others(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text(
        textwrap.dedent(f"""\
        name: faulty
        models: [{{name: m, adapter: "{__name__}:broken_adapter"}}]
        samplers: [ddim, dpmpp_2m]
        steps: [2]
        samples: 20
        conditions: {{classes: 10}}
        reference: {{dataset: mnist-heldout, samples: 100}}
        extractor: mnist-net
        metrics: [fd, throughput]
    """)
    )
    sys.path.insert(0, os.path.dirname(__file__))
    out = tmp_path / "run"
    assert main(["run", str(p), "--out", str(out), "-q"]) == 1
    store = RunStore(out)
    ok, bad = store.read_cell("m__ddim__s2__g1"), store.read_cell("m__dpmpp_2m__s2__g1")
    assert ok["status"] == "done" and bad["status"] == "failed"
    assert "RuntimeError: boom on purpose" in bad["error"] and "Traceback" in bad["error"]
    assert "FAILED m__dpmpp_2m__s2__g1" in capsys.readouterr().err
    assert set(pd.read_parquet(out / "results.parquet").sampler) == {"ddim"}


# -- results kept and current; a failing metric costs only its own rows ---------------------------------------
NOISE = """\
name: {name}
models: [{{name: m, adapter: noise}}]
samplers: [{samplers}]
steps: [2]
samples: 12
seed: {seed}
reference: {{dataset: mnist-heldout, samples: 100}}
extractor: mnist-net
metrics: [{metrics}]
"""


def _noise_suite(tmp_path, samplers="ddim, euler, heun", metrics="fd, throughput", seed=0, name="n", file="n.yaml"):
    p = tmp_path / file
    p.write_text(NOISE.format(name=name, samplers=samplers, metrics=metrics, seed=seed))
    return p


def test_a_killed_run_leaves_the_table_of_the_cells_that_finished(tmp_path, monkeypatch):
    from evalkit.run.runner import Runner
    from evalkit.store import read_run

    out, started = tmp_path / "run", []
    real = Runner.run_cell

    def run_cell(self, cell):
        started.append(cell.cell_id)
        if len(started) == 3:  # the 3rd of 3 cells: the process dies here
            raise KeyboardInterrupt
        real(self, cell)

    monkeypatch.setattr(Runner, "run_cell", run_cell)
    with pytest.raises(KeyboardInterrupt):
        Runner(load_suite(_noise_suite(tmp_path)), out).run()
    df = pd.read_parquet(out / "results.parquet")
    assert set(df.cell_id) == set(started[:2]) and len(started) == 3
    assert set(pd.read_csv(out / "results.csv").cell_id) == set(started[:2])
    run = read_run(out)
    assert run.export_problems == [] and run.stale == {}
    assert sorted(run.export()["value"].dropna()) == sorted(run.results["value"].dropna())
    assert json.loads((out / "run.json").read_text())["status"] == {"done": 2, "failed": 0, "total": 3}


def test_n_is_an_integer_column(tmp_path):
    from evalkit.store import read_run

    out = tmp_path / "run"
    assert main(["run", str(_noise_suite(tmp_path, samplers="ddim")), "--out", str(out), "-q"]) == 0
    assert pd.read_parquet(out / "results.parquet").n.dtype.kind == "i"
    results = read_run(out).results
    assert str(results.n.dtype) == "Int64" and (results.n == 12).all()
    assert (results.error == "").all()


def test_a_folder_keeps_the_results_of_every_suite_run_into_it(tmp_path, capsys):
    """Suite A, then suite B into one folder: the export holds both (each row with the config hash that made it),
    run.json lists both configs; readers and the gate judge the last one's cells, and accept the folder."""
    from evalkit.gate.integrity import integrity_problems
    from evalkit.store import read_run

    out = tmp_path / "run"
    a = _noise_suite(tmp_path, samplers="ddim", file="a.yaml", name="a")
    b = _noise_suite(tmp_path, samplers="euler", file="b.yaml", name="b")
    assert main(["run", str(a), "--out", str(out), "-q"]) == 0
    assert main(["run", str(b), "--out", str(out), "-q"]) == 0
    ha, hb = load_suite(a).config_hash(), load_suite(b).config_hash()
    df = pd.read_parquet(out / "results.parquet")
    assert set(zip(df.cell_id, df.config_hash)) == {("m__ddim__s2__g1", ha), ("m__euler__s2__g1", hb)}
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["config_hash"] == hb and set(manifest["configs"]) == {ha, hb}
    assert [c["cell_id"] for c in manifest["configs"][ha]["cells"]] == ["m__ddim__s2__g1"]
    assert manifest["configs"][ha]["config"] == load_suite(a).to_config()
    run = read_run(out)
    assert set(run.results.cell_id) == {"m__euler__s2__g1"}  # what a check or a report judges: the last suite
    assert set(run.all_results.cell_id) == {"m__ddim__s2__g1", "m__euler__s2__g1"}
    assert run.export_problems == [] and integrity_problems(run) == []
    assert "m__ddim__s2__g1" not in capsys.readouterr().out.split("run folder:")[-1]

    # suite A again: its cell is reused, both configs stay, the export still holds both
    assert main(["run", str(a), "--out", str(out), "-q"]) == 0
    assert "0 cells computed, 1 reused" in capsys.readouterr().out
    run = read_run(out)
    assert set(run.configs) == {ha, hb} and set(run.results.cell_id) == {"m__ddim__s2__g1"}
    assert set(pd.read_parquet(out / "results.parquet").cell_id) == {"m__ddim__s2__g1", "m__euler__s2__g1"}
    assert run.export_problems == []

    # an edited export is still refused
    df = pd.read_parquet(out / "results.parquet")
    df.loc[df.metric == "fd", "value"] += 1
    df.to_parquet(out / "results.parquet", index=False)
    assert any("was changed after evalkit wrote it" in p for p in integrity_problems(read_run(out)))


FLAKY = {"fail": False}


def _flaky(inputs):
    if FLAKY["fail"]:
        raise RuntimeError("flaky metric broke\n on purpose")
    x = np.asarray(inputs.gen["features"], dtype=np.float64)
    from evalkit.metrics.base import MetricValue

    return {"flaky_mean": MetricValue(float(x.mean())), "flaky_spread": MetricValue(float(x.std()))}


@pytest.fixture
def flaky():
    """A registered metric that raises while FLAKY['fail'] is set; unregistered afterwards."""
    from evalkit.metrics.base import MetricDef, register_metric
    from evalkit.registry import METRICS

    defn = MetricDef("flaky", False, {"flaky_mean": True, "flaky_spread": False}, _flaky, options={})
    register_metric(defn)
    FLAKY["fail"] = False
    yield FLAKY
    FLAKY["fail"] = False
    METRICS._items.pop("flaky", None)


def test_a_failing_metric_marks_its_own_rows_and_keeps_the_other_metrics(tmp_path, flaky, capsys):
    from evalkit.store import read_run

    flaky["fail"] = True
    suite, out = _noise_suite(tmp_path, samplers="ddim, euler", metrics="fd, flaky, throughput"), tmp_path / "run"
    assert main(["run", str(suite), "--out", str(out), "-q"]) == 1
    captured = capsys.readouterr()
    for cell in ("m__ddim__s2__g1", "m__euler__s2__g1"):
        for row in ("flaky_mean", "flaky_spread"):
            assert f"FAILED metric {row} of {cell}: RuntimeError: flaky metric broke on purpose" in captured.err
    assert "2 cells computed, 0 reused, 0 failed; 4 metric rows failed" in captured.out
    run = read_run(out)
    assert {run.status(c) for c in ("m__ddim__s2__g1", "m__euler__s2__g1")} == {"done"}
    df = run.results.set_index(["cell_id", "metric"])
    for cell in ("m__ddim__s2__g1", "m__euler__s2__g1"):
        assert np.isfinite(df.loc[(cell, "fd"), "value"]) and df.loc[(cell, "fd"), "error"] == ""
        assert np.isfinite(df.loc[(cell, "images_per_s"), "value"])
        for row in ("flaky_mean", "flaky_spread"):
            assert np.isnan(df.loc[(cell, row), "value"])
            assert df.loc[(cell, row), "error"] == "RuntimeError: flaky metric broke on purpose"
            assert df.loc[(cell, row), "extractor"] == "mnist-net"
    assert len(run.failed_metrics()) == 4 and set(run.failed_metrics().metric) == {"flaky_mean", "flaky_spread"}
    assert run.export_problems == []
    # resumed: the cells are done (features kept), the failed metrics are still named and still exit 1
    assert main(["run", str(suite), "--out", str(out), "-q"]) == 1
    captured = capsys.readouterr()
    assert (
        "0 cells computed, 2 reused" in captured.out and "FAILED metric flaky_mean of m__ddim__s2__g1" in captured.err
    )


def test_the_gate_judges_a_failed_metric_as_an_error(tmp_path, flaky):
    """A baseline made while the metric worked; a run where it fails: that metric's verdict is an error (exit 1),
    the cell's other metrics are still judged."""
    from evalkit.gate.baseline import build_baseline
    from evalkit.gate.compare import ERROR, PASS, compare
    from evalkit.run.runner import Runner
    from evalkit.store import read_run

    def run(seed: int, out: str):
        suite = load_suite(_noise_suite(tmp_path, samplers="ddim", metrics="fd, flaky", seed=seed, file=f"{out}.yaml"))
        return Runner(suite, tmp_path / out).run()

    assert run(0, "s0").exit_code == 0 and run(1, "s1").exit_code == 0
    baseline, _ = build_baseline([read_run(tmp_path / "s0"), read_run(tmp_path / "s1")])
    flaky["fail"] = True
    assert run(0, "now").exit_code == 1
    report = compare(baseline, read_run(tmp_path / "now"))
    verdicts = {c.entry.metric: c.verdict for c in report.comparisons}
    assert verdicts == {"fd": PASS, "flaky_mean": ERROR, "flaky_spread": ERROR}
    assert report.exit_code == 1


def test_a_paired_check_judges_a_failed_metric_as_an_error(tmp_path, flaky):
    """As above, with the baseline's feature sidecar: same seed, so the check is paired and computes CIs."""
    from evalkit.gate.baseline import Baseline, build_baseline
    from evalkit.gate.compare import ERROR, PASS, compare
    from evalkit.run.runner import Runner
    from evalkit.store import read_run

    def run(seed: int, out: str):
        suite = load_suite(_noise_suite(tmp_path, samplers="ddim", metrics="fd, flaky", seed=seed, file=f"{out}.yaml"))
        return Runner(suite, tmp_path / out).run()

    run(0, "s0"), run(1, "s1")
    baseline, sidecar = build_baseline([read_run(tmp_path / "s0"), read_run(tmp_path / "s1")])
    path = baseline.save(tmp_path / "b.json", sidecar)
    flaky["fail"] = True
    run(0, "now")
    report = compare(Baseline.load(path), read_run(tmp_path / "now"))
    assert report.paired
    assert {c.entry.metric: c.verdict for c in report.comparisons} == {
        "fd": PASS,
        "flaky_mean": ERROR,
        "flaky_spread": ERROR,
    }
