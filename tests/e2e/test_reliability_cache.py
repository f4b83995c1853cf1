"""Corrupt caches (issue 7): damaged run-folder files and reference-feature cache entries are detected by
checksum and recomputed, never silently used, and the numbers afterwards are the right ones."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evalkit.cli import main
from evalkit.features.base import build_extractor
from evalkit.references import ReferenceSetError, cache_path, open_reference, reference_features
from evalkit.run.costs import THROUGHPUT_ROWS
from evalkit.store import RunStore, npz_bytes

SUITE = """\
name: cache
models: [{name: n, adapter: noise}]
samplers: [ddim, euler]
steps: [2]
samples: 40
batch_size: 10
conditions: {classes: 10}
reference: {dataset: mnist-heldout, samples: 200}
extractor: mnist-net
metrics: [fd, kid, throughput]
grid_samples: 8
"""
VICTIM = "n__ddim__s2__g1"


def _quality(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "results.csv")
    df = df[~df.metric.isin(THROUGHPUT_ROWS)]
    return df.sort_values(["sampler", "metric"])[["sampler", "metric", "value", "std"]].reset_index(drop=True)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache_run")
    suite = root / "cache.yaml"
    suite.write_text(SUITE)
    mp = pytest.MonkeyPatch()
    mp.setenv("EVALKIT_CACHE_DIR", str(root / "cache"))
    try:
        assert main(["run", str(suite), "--out", str(root / "run"), "-q"]) == 0
    finally:
        mp.undo()
    store = RunStore(root / "run")
    return {
        "suite": suite,
        "run": root / "run",
        "quality": _quality(root / "run"),
        "features": {c: store.load_features(c) for c in (VICTIM, "n__euler__s2__g1")},
    }


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))


def _other_valid_features(p: Path) -> None:
    """A well-formed npz with other numbers (what a wrong copy or a bad merge would leave)."""
    arrays = {k: np.zeros_like(v) for k, v in np.load(p).items()}
    p.write_bytes(npz_bytes(arrays))


def _edit_json(p: Path, fn) -> None:
    obj = json.loads(p.read_text())
    fn(obj)
    p.write_text(json.dumps(obj, indent=2))


def _forge_features(cell_dir: Path) -> None:
    """Replace features.npz with other valid arrays AND update the sha256 cell.json records for it:
    only cell.json's own checksum can tell."""
    feats = cell_dir / "features.npz"
    _other_valid_features(feats)
    from evalkit.store import sha256_file

    _edit_json(cell_dir / "cell.json", lambda o: o["files"].__setitem__("features.npz", sha256_file(feats)))


def _bump_fd(rows: list) -> None:
    for r in rows:
        if r["metric"] == "fd":
            r["value"] = 0.0


CORRUPTIONS = {
    "features truncated": lambda d: _truncate(d / "features.npz"),
    "features one bit flipped": lambda d: _flip(d / "features.npz"),
    "features replaced by other valid arrays": lambda d: _other_valid_features(d / "features.npz"),
    "features deleted": lambda d: (d / "features.npz").unlink(),
    "cell.json truncated": lambda d: _truncate(d / "cell.json"),
    "cell.json value edited": lambda d: _edit_json(d / "cell.json", lambda o: o.__setitem__("n", 4000)),
    "cell.json and features forged together": _forge_features,
    "rows.json value edited": lambda d: _edit_json(d / "rows.json", _bump_fd),
    "rows.json truncated": lambda d: _truncate(d / "rows.json"),
    "samples.npz bit flipped": lambda d: _flip(d / "samples.npz"),
    "grid.png truncated": lambda d: _truncate(d / "grid.png"),
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_corrupt_cell_file_is_recomputed_with_the_right_numbers(kind, finished_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run["run"], run)
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))
    CORRUPTIONS[kind](RunStore(run).cell_dir(VICTIM))
    capsys.readouterr()
    assert main(["run", str(finished_run["suite"]), "--out", str(run), "-q"]) == 0
    assert "(1 cells computed, 1 reused, 0 failed)" in capsys.readouterr().out  # only the damaged cell
    pd.testing.assert_frame_equal(_quality(run), finished_run["quality"], check_exact=True)
    store = RunStore(run)
    assert store.is_done(VICTIM)
    for cell_id, want in finished_run["features"].items():
        got = store.load_features(cell_id)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_corrupt_manifest_is_rewritten(finished_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(finished_run["run"], run)
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "cache"))
    _truncate(run / "run.json")
    with pytest.warns(UserWarning, match="run.json is corrupt"):
        assert main(["run", str(finished_run["suite"]), "--out", str(run), "-q"]) == 0
    assert "(0 cells computed, 2 reused, 0 failed)" in capsys.readouterr().out  # the cells were intact
    assert json.loads((run / "run.json").read_text())["status"]["done"] == 2


# -- the reference-feature cache -------------------------------------------------------------------------


class Counting:
    """Wraps the real mnist-net extractor and counts the images it is fed."""

    def __init__(self, inner) -> None:
        self.inner, self.images = inner, 0
        self.name, self.weights_id, self.mode, self.outputs = inner.name, inner.weights_id, inner.mode, inner.outputs
        self.resolution = inner.resolution

    def __call__(self, images):
        self.images += len(images)
        return self.inner(images)


@pytest.fixture(scope="module")
def mnist_net():
    return build_extractor("mnist-net")


def _swap_in_foreign_entry(path: Path, foreign: Path) -> None:
    shutil.copy(foreign, path)
    shutil.copy(foreign.with_suffix(".npz.sha256"), path.with_suffix(".npz.sha256"))


REF_CORRUPTIONS = {
    "truncated": lambda p, other: _truncate(p),
    "one bit flipped": lambda p, other: _flip(p),
    "sidecar edited": lambda p, other: p.with_suffix(".npz.sha256").write_text("0" * 64 + "\n"),
    "sidecar emptied": lambda p, other: p.with_suffix(".npz.sha256").write_text(""),
    "other reference's entry copied in (checksum valid)": _swap_in_foreign_entry,
}


@pytest.mark.parametrize("kind", list(REF_CORRUPTIONS))
def test_corrupt_reference_cache_is_recomputed(kind, mnist_net, tmp_path):
    ref = open_reference({"dataset": "mnist-heldout", "samples": 150})
    other = open_reference({"dataset": "mnist-heldout", "samples": 60})
    truth = reference_features(ref, [mnist_net], use_cache=False)["mnist-net"]
    first = Counting(mnist_net)
    reference_features(ref, [first], cache_dir=tmp_path)
    reference_features(other, [mnist_net], cache_dir=tmp_path)
    path, foreign = cache_path(ref, mnist_net, tmp_path), cache_path(other, mnist_net, tmp_path)
    assert first.images == 150 and path.is_file() and foreign.is_file()

    REF_CORRUPTIONS[kind](path, foreign)
    again = Counting(mnist_net)
    with pytest.warns(UserWarning, match="recomputing"):
        got = reference_features(ref, [again], cache_dir=tmp_path)["mnist-net"]
    assert again.images == 150  # the networks ran again: the damaged entry was not used
    for k in truth:
        np.testing.assert_array_equal(got[k], truth[k])
    hit = Counting(mnist_net)  # and the rewritten entry is good again
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cached = reference_features(ref, [hit], cache_dir=tmp_path)["mnist-net"]
    assert hit.images == 0
    np.testing.assert_array_equal(cached["features"], truth["features"])


@pytest.mark.parametrize("damage", ["truncated", "flipped", "garbage"])
def test_corrupt_reference_statistics_file_is_a_clean_error(damage, tmp_path, capsys):
    stats = tmp_path / "ref_stats.npz"
    from evalkit.references import save_reference_stats

    save_reference_stats(stats, np.random.default_rng(0).normal(size=(40, 5)))
    if damage == "truncated":
        _truncate(stats)
    elif damage == "flipped":
        _flip(stats)
    else:
        stats.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ReferenceSetError, match="cannot read reference statistics"):
        open_reference({"stats": str(stats)})
    suite = tmp_path / "s.yaml"
    suite.write_text(
        SUITE.replace("{dataset: mnist-heldout, samples: 200}", f"{{stats: {stats}}}").replace(
            "[fd, kid, throughput]", "[fd]"
        )
    )
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "cannot read reference statistics" in err and "Traceback" not in err
