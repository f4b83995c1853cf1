"""The issue's cases on the built-in model: a run folder that an interrupted run of another suite (or of the
same suite with other ``samples``) left behind is never judged — exit 2 naming the cells, not a PASS from the
old cells and not an IndexError.

The interruption is deterministic: the second run's ``Runner.run_cell`` raises KeyboardInterrupt, so the
runner has written the new run.json (and nothing else) when it stops, as a Ctrl-C during the first cell would.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from evalkit.cli import main
from evalkit.run.runner import Runner
from evalkit.store import read_run
from evalkit.suite import load_suite

SUITE = """\
name: tiny
models: [{{name: mnist, adapter: zoo{options}}}]
samplers: [ddim]
steps: [3]
guidance: [1]
samples: {samples}
batch_size: 40
seed: 0
conditions: {{classes: 10}}
reference: {{dataset: mnist-heldout, samples: 200}}
extractor: mnist-net
metrics: [fd, is, pr, throughput]
grid_samples: 4
"""
CELL = "mnist__ddim__s3__g1"


def write_suite(path: Path, *, samples: int = 40, options: str = "") -> Path:
    path.write_text(SUITE.format(samples=samples, options=options))
    return path


@pytest.fixture(scope="module")
def made(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(the suite, its baseline over 2 seed sets, a finished run folder of it)."""
    tmp = tmp_path_factory.mktemp("interrupted")
    suite = write_suite(tmp / "tiny.yaml")
    baseline = tmp / "b.json"
    assert main(["baseline", str(suite), "--seeds", "2", "-o", str(baseline), "--work-dir", str(tmp / "w"), "-q"]) == 0
    assert main(["run", str(suite), "--out", str(tmp / "run"), "-q"]) == 0
    return suite, baseline, tmp / "run"


def interrupted_run(suite_path: Path, out: Path, monkeypatch) -> None:
    """Start ``suite_path`` into ``out`` and stop it once run.json names it (before its first cell finishes)."""

    def interrupt(self, cell):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(Runner, "run_cell", interrupt)
        with pytest.raises(KeyboardInterrupt):
            Runner(load_suite(suite_path), out, device="cpu").run()


def check(run: Path, baseline: Path) -> int:
    return main(["check", str(run), "--baseline", str(baseline), "-q", "--bootstrap", "20"])


def test_an_interrupted_run_of_another_model_is_not_judged(made, tmp_path, capsys, monkeypatch):
    _, baseline, finished = made
    run = Path(shutil.copytree(finished, tmp_path / "X"))
    assert check(run, baseline) == 0
    untrained = write_suite(tmp_path / "untrained.yaml", options=", options: {weights: untrained}")
    interrupted_run(untrained, run, monkeypatch)
    assert read_run(run).config["models"][0]["options"] == {"weights": "untrained"}
    capsys.readouterr()
    assert check(run, baseline) == 2  # was: PASS, judged on the trained model's cells
    out, err = capsys.readouterr()
    assert "PASS" not in out and "made by another config than its run.json" in err and f"{CELL} (cell hash" in err


def test_a_restart_with_other_samples_is_not_judged(made, tmp_path, capsys, monkeypatch):
    suite, baseline, _ = made
    run = tmp_path / "W"
    assert main(["run", str(write_suite(tmp_path / "20.yaml", samples=20)), "--out", str(run), "-q"]) == 0
    interrupted_run(suite, run, monkeypatch)  # the 40-sample suite of the baseline, stopped at once
    capsys.readouterr()
    assert check(run, baseline) == 2  # was: IndexError in the paired bootstrap (20 features, 40 indices)
    err = capsys.readouterr().err
    assert f"{CELL} (made with samples 20, run.json says 40)" in err
    data = read_run(run)
    assert data.status(CELL) == "stale" and data.results.empty  # the report sees no 20-sample numbers either

    assert main(["run", str(suite), "--out", str(run), "-q"]) == 0  # the restart, finished: the cell recomputed
    assert check(run, baseline) == 0
