"""Crash safety (issue 7): `kill -9` at random points never corrupts a run, and one run folder has one writer.

The kill test runs real ``python -m evalkit run`` processes and SIGKILLs each one after a random delay
(seeded) counted from the moment it takes the run-folder lock, i.e. while it reads caches, writes the
reference-feature cache, cells and results. After every kill the folder is checked for half-written
files; each trial is then completed (in-process, to spare a torch import) and must equal an
uninterrupted run exactly: the same result values and bit-identical features.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import evalkit.run.runner  # noqa: F401  (imported now, so the baseline's wall time is the run alone)
from evalkit.cli import main
from evalkit.run.costs import THROUGHPUT_ROWS
from evalkit.store import RunStore, load_npz_checked, read_run, record_intact

SUITE = """\
name: crash
models: [{name: mnist, adapter: zoo}]
samplers: [ddim, euler]
steps: [2, 3]
guidance: [1]
samples: 30
batch_size: 5
conditions: {classes: 10}
reference: {dataset: mnist-heldout, samples: 200}
extractor: mnist-net
metrics: [fd, kid, throughput]
grid_samples: 8
"""
TRIALS = 6
CELLS = 4


@pytest.fixture
def one_thread():
    """Children run with OMP_NUM_THREADS=1; the in-process runs must use the same kernels to match bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _env(cache: Path) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "EVALKIT_CACHE_DIR": str(cache),
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def _cmd(suite: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "evalkit", "run", str(suite), "--out", str(out), "-q"]


def _lock_holder(out: Path) -> str:
    try:
        return (out / ".lock").read_text().strip()
    except OSError:
        return ""


def _done_cells(out: Path) -> int:
    n = 0
    for p in out.glob("cells/*/cell.json"):
        try:
            n += json.loads(p.read_text()).get("status") == "done"
        except (OSError, ValueError):
            pass
    return n


def _kill_at(suite: Path, out: Path, cache: Path, after_cells: int, delay: float) -> bool:
    """Start a run; once it holds the lock and ``after_cells`` cells are done, sleep ``delay`` s and
    SIGKILL it. True if it was still running when killed."""
    proc = subprocess.Popen(_cmd(suite, out), env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while (
            proc.poll() is None
            and time.monotonic() < deadline
            and (_lock_holder(out) != str(proc.pid) or _done_cells(out) < after_cells)
        ):
            time.sleep(0.01)
        time.sleep(delay)
        alive = proc.poll() is None
        if alive:
            proc.send_signal(signal.SIGKILL)
        return alive
    finally:
        proc.kill()
        proc.wait()


def _assert_nothing_half_written(out: Path, cache: Path) -> None:
    """What a reader can see after a kill: whole files only (temporaries aside)."""
    store = RunStore(out)
    if (out / "run.json").exists():
        assert isinstance(json.loads((out / "run.json").read_text()), dict)
    done = set()
    for cell_json in out.glob("cells/*/cell.json"):
        record = json.loads(cell_json.read_text())  # never truncated
        assert record_intact(record) is True, cell_json
        if record["status"] == "done":  # written last: everything it lists is complete
            assert store.is_done(record["cell_id"]), cell_json
            done.add(record["cell_id"])
    for name in ("results.csv", "results.parquet"):
        if (out / name).exists():
            table = (pd.read_csv if name.endswith("csv") else pd.read_parquet)(out / name)
            # rewritten after each finished cell: a killed run leaves a table of finished cells only
            assert set(table.cell_id) <= done, (name, set(table.cell_id) - done)
    for entry in cache.glob("reference-features/*.npz"):
        sidecar = entry.with_suffix(".npz.sha256")
        if sidecar.exists():  # the sidecar is written last: an entry it vouches for is whole
            assert load_npz_checked(entry, sidecar.read_text().strip()) is not None, entry


def _quality(out: Path) -> pd.DataFrame:
    df = pd.read_csv(out / "results.csv")
    df = df[~df.metric.isin(THROUGHPUT_ROWS)]
    return df.sort_values(["model", "sampler", "steps", "guidance", "metric"])[
        ["model", "sampler", "steps", "guidance", "metric", "value", "std"]
    ].reset_index(drop=True)


def _features(out: Path) -> dict[str, dict[str, np.ndarray]]:
    store = RunStore(out)
    return {rec["cell_id"]: store.load_features(rec["cell_id"]) for rec in store.iter_cells()}


@pytest.mark.slow
def test_sigkill_at_random_points_never_changes_the_results(tmp_path, monkeypatch, one_thread):
    suite = tmp_path / "crash.yaml"
    suite.write_text(SUITE)

    # the uninterrupted run, and how long one cell takes (the scale of the kill delays)
    monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / "clean-cache"))
    assert main(["run", str(suite), "--out", str(tmp_path / "clean"), "-q"]) == 0
    want_rows, want_feats = _quality(tmp_path / "clean"), _features(tmp_path / "clean")
    assert len(want_feats) == CELLS and len(want_rows) > CELLS
    cell_s = max(float(np.mean([r["timings"]["total_s"] for r in RunStore(tmp_path / "clean").iter_cells()])), 0.2)

    # Kill points: after k finished cells (k random, 0 = during start-up and the reference cache) plus a
    # random delay of up to ~1.5 cells, so kills land anywhere among the writes whatever the machine's speed.
    rng = random.Random(20240607)
    plans = [
        [(rng.randrange(CELLS), rng.uniform(0.0, 1.5 * cell_s)) for _ in range(1 + (rng.random() < 0.2))]
        for _ in range(TRIALS)
    ]

    def trial(t: int) -> list[bool]:
        out, cache = tmp_path / f"t{t}" / "run", tmp_path / f"t{t}" / "cache"
        landed = []
        for after_cells, delay in plans[t]:  # several kills in a row: each resumes the previous one's leftovers
            landed.append(_kill_at(suite, out, cache, after_cells, delay))
            _assert_nothing_half_written(out, cache)
        return landed

    with ThreadPoolExecutor(max_workers=2) as pool:  # two trials at a time: imports use both cores
        landed = list(pool.map(trial, range(TRIALS)))

    kills = sum(len(p) for p in plans)
    mid_run = sum(map(sum, landed))
    assert kills >= TRIALS and mid_run >= TRIALS // 2, f"only {mid_run} of {kills} kills landed mid-run"

    for t in range(TRIALS):
        out = tmp_path / f"t{t}" / "run"
        monkeypatch.setenv("EVALKIT_CACHE_DIR", str(tmp_path / f"t{t}" / "cache"))
        assert main(["run", str(suite), "--out", str(out), "-q"]) == 0, f"trial {t}"
        pd.testing.assert_frame_equal(_quality(out), want_rows, check_exact=True, obj=f"trial {t} results")
        got = _features(out)
        assert got.keys() == want_feats.keys()
        for cell_id, arrays in got.items():
            assert arrays.keys() == want_feats[cell_id].keys()
            for k, v in arrays.items():
                np.testing.assert_array_equal(v, want_feats[cell_id][k], err_msg=f"trial {t} {cell_id} {k}")
        assert not list(out.rglob("*.tmp")), "a resumed run removes the temporaries of killed writers"
        assert read_run(out).export_problems == [], f"trial {t}"
        manifest = json.loads((out / "run.json").read_text())
        assert manifest["status"] == {"done": CELLS, "failed": 0, "total": CELLS}


def test_second_run_on_a_locked_folder_exits_2_and_writes_nothing(tmp_path):
    suite = tmp_path / "crash.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "run"
    with RunStore(out):  # this process is writing the folder
        res = subprocess.run(
            _cmd(suite, out), env=_env(tmp_path / "cache"), capture_output=True, text=True, timeout=300
        )
    assert res.returncode == 2, res.stderr
    assert f"run folder {out} is in use by another evalkit process (pid {os.getpid()})" in res.stderr
    assert "Traceback" not in res.stderr
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # no run.json, no cells, no results
    assert not (tmp_path / "cache").exists()


def test_stale_temporaries_are_removed_when_the_lock_is_taken(tmp_path):
    out = tmp_path / "run"
    (out / "cells" / "c").mkdir(parents=True)
    litter = [out / ".evalkit-run.json.abc.tmp", out / "cells" / "c" / ".evalkit-features.npz.x1y2.tmp"]
    for p in litter:
        p.write_bytes(b"half")
    keep = [out / "cells" / "c" / "features.npz", out / ".notes.tmp", out / "cells" / "c" / ".draft.tmp"]
    for p in keep:  # a user's own dot-files ending in .tmp are not evalkit's to remove
        p.write_bytes(b"x")
    with RunStore(out):
        pass
    assert not any(p.exists() for p in litter) and all(p.exists() for p in keep)


_WRITER = """\
import sys
from evalkit.store import atomic_write_bytes
path, n = sys.argv[1], int(sys.argv[2])
a, b = b"a" * n, b"b" * n
atomic_write_bytes(path, a)
print("ready", flush=True)
while True:
    atomic_write_bytes(path, b)
    atomic_write_bytes(path, a)
"""


def test_sigkill_during_atomic_writes_leaves_old_or_new_file(tmp_path):
    """A reader of a file being rewritten sees the old bytes or the new ones, never a part of them."""
    path, n = tmp_path / "data.bin", 4 << 20
    rng = random.Random(7)
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(n)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        data = path.read_bytes()
        assert len(data) == n and data in (b"a" * n, b"b" * n)
    with RunStore(tmp_path):  # and the next writer clears the killed writer's temporary
        pass
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", "data.bin"]


def test_atomic_writes_get_the_usual_file_mode(tmp_path):
    """Results are shared: an atomic write gets the mode a plain open() gets under the same umask,
    not mkstemp's private 0600."""
    import stat

    from evalkit.store import atomic_write_bytes

    atomic_write_bytes(tmp_path / "r.json", b"{}")
    (tmp_path / "plain.json").write_bytes(b"{}")
    mode = stat.S_IMODE((tmp_path / "r.json").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain.json").stat().st_mode)
