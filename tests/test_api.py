"""The Python API (:mod:`evalkit.api`): thin wrappers giving what the commands give. ``api.run`` returns the rows
``evalkit run`` writes, ``api.load_results`` is the one reader, ``api.compare`` the gate's one verdict against a
baseline made by ``evalkit baseline``, ``api.score`` what ``evalkit score`` computes; ``import evalkit`` stays light."""

from __future__ import annotations

import sys

import numpy as np
import pandas as pd
import pytest
from conftest import write_pngs

import evalkit
from evalkit import api
from evalkit.cli import main
from evalkit.errors import ConfigError
from evalkit.gate.baseline import CheckConfigError
from evalkit.run.preflight import PreflightError
from evalkit.store import RunData, read_run

TINY = """\
name: tiny-api
models: [{name: mnist, adapter: zoo}]
samplers: [ddim]
steps: [2]
guidance: [1, 3]
samples: 20
batch_size: 20
conditions: {classes: 10}
reference: {dataset: mnist-heldout, samples: 100}
extractor: mnist-net
metrics: [fd, pr, throughput]
grid_samples: 4
timing: {repeats: 1, warmup: 0}
"""
# Columns that say what was measured and its value; timing rows and columns vary from run to run.
SAME = ["cell_id", "metric", "extractor", "weights_id", "mode", "n", "seed", "value", "ci_low", "ci_high"]
QUALITY = ["fd", "precision", "recall", "density", "coverage"]


def _quality(df: pd.DataFrame) -> pd.DataFrame:
    rows = df[df.metric.isin(QUALITY)]
    return rows.sort_values(["cell_id", "metric"])[SAME].reset_index(drop=True)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """The tiny suite run by the command, and a baseline of it (2 seed sets, the first seed-0's folder)."""
    tmp = tmp_path_factory.mktemp("api")
    suite = tmp / "tiny.yaml"
    suite.write_text(TINY)
    assert main(["run", str(suite), "--out", str(tmp / "cli"), "-q"]) == 0
    args = ["baseline", str(suite), "--seeds", "2", "-o", str(tmp / "b.json"), "--work-dir", str(tmp / "w"), "-q"]
    assert main(args) == 0
    return tmp, suite


def test_run_returns_the_rows_evalkit_run_writes(made):
    tmp, suite = made
    df = api.run(str(suite), out=tmp / "api", device="cpu")
    cli = read_run(tmp / "cli").results
    pd.testing.assert_frame_equal(_quality(df), _quality(cli))  # bit for bit
    assert set(df.metric) == set(cli.metric) and len(df) == len(cli)
    assert df.attrs["run_dir"] == str(tmp / "api") and len(df.attrs["done"]) == 2 and not df.attrs["failed"]
    again = api.run(suite, out=tmp / "api")  # resumes: every cell reused, the same table
    assert again.attrs["reused"] == df.attrs["done"] and not again.attrs["done"]
    pd.testing.assert_frame_equal(_quality(again), _quality(df))


def test_run_takes_a_mapping_and_raises_what_the_command_reports(made, tmp_path):
    import yaml

    raw = yaml.safe_load(TINY)
    raw["models"] = [{"name": "mnist", "adapter": "zoo", "options": {"no_such_option": 1}}]
    with pytest.raises(ConfigError, match=r"models\[0\]\.options"):
        api.run(raw, out=tmp_path / "bad")
    raw = {**yaml.safe_load(TINY), "reference": {"path": str(tmp_path / "no-such-folder")}}
    with pytest.raises(PreflightError) as e:
        api.run(raw, out=tmp_path / "bad")
    assert e.value.exit_code == 2 and any("no-such-folder" in p for p in e.value.problems)


def test_load_results_is_the_one_reader(made):
    tmp, _ = made
    run = api.load_results(tmp / "cli")
    assert isinstance(run, RunData) and api.load_results(run) is run
    pd.testing.assert_frame_equal(run.results, read_run(tmp / "cli").results)
    assert evalkit.load_results is api.load_results


def test_compare_gives_the_gates_verdict_against_a_baseline(made, capsys):
    tmp, suite = made
    report = api.compare(tmp / "cli", tmp / "b.json", n_resamples=50)  # seed 0, as the baseline's first set
    assert report.paired and report.exit_code == 0 and not report.regressions
    assert {c.entry.metric for c in report.comparisons} == set(QUALITY)
    assert all(c.verdict == "pass" and c.delta == pytest.approx(0.0, abs=1e-9) for c in report.comparisons)
    # the same verdict as `evalkit check` on the same folder, and a RunData is taken too
    assert main(["check", str(tmp / "cli"), "--baseline", str(tmp / "b.json"), "-q", "--bootstrap", "50"]) == 0
    again = api.compare(read_run(tmp / "cli"), str(tmp / "b.json"), n_resamples=50)
    assert [(c.entry.key, c.verdict, c.delta) for c in again.comparisons] == [
        (c.entry.key, c.verdict, c.delta) for c in report.comparisons
    ]
    with pytest.raises(CheckConfigError, match="seed"):
        api.compare(tmp / "w" / "seed-1", tmp / "b.json")  # another seed set must be asked for (seed=...)
    assert evalkit.compare is api.compare


def test_score_wraps_evalkit_score(made, tmp_path):
    tmp, _ = made
    images = read_run(tmp / "cli").samples("mnist__ddim__s2__g1")["images"]
    gen = write_pngs(np.repeat(images, 3, axis=0), tmp_path / "gen")  # 12 images
    df = api.score(gen, "mnist-heldout", "fd", extractor="mnist-net", out=tmp_path / "score", batch_size=8)
    fd = df[df.metric == "fd"]
    assert len(fd) == 1 and df.attrs["run_dir"] == str(tmp_path / "score")
    assert np.isfinite(fd.value).all() and (fd.extractor == "mnist-net").all()
    assert evalkit.score is api.score
    cli = tmp_path / "cli"
    argv = ["score", str(gen), "--ref", "mnist-heldout", "-m", "fd", "-e", "mnist-net", "--batch-size", "8"]
    assert main([*argv, "--out", str(cli), "-q"]) == 0
    by_cli = read_run(cli).results
    assert by_cli[by_cli.metric == "fd"].value.tolist() == fd.value.tolist()


def test_importing_evalkit_and_its_api_loads_no_heavy_library():
    from test_startup import HEAVY, _python

    r = _python(
        f"""
        import json, sys
        import evalkit
        from evalkit import api
        f = evalkit.score, evalkit.load_results, evalkit.compare, api.run
        print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))
        """
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    assert sorted({"score", "load_results", "compare"} - set(dir(evalkit))) == []
    assert "evalkit.api" in sys.modules
