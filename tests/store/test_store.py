"""The run store: atomic writes, checksums, the lock."""

from __future__ import annotations

import multiprocessing as mp

import numpy as np
import pytest

from evalkit.store import RunStore, StoreError, atomic_write_bytes, safe_component


def test_cell_is_done_only_when_intact(tmp_path):
    store = RunStore(tmp_path)
    feats = {"x/features": np.arange(12.0).reshape(3, 4)}
    store.write_cell("c1", {"cell_id": "c1"}, features=feats, rows=[{"metric": "fd", "value": 1.0}])
    assert store.is_done("c1")
    np.testing.assert_array_equal(store.load_features("c1")["x/features"], feats["x/features"])
    path = store.cell_dir("c1") / "features.npz"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte
    path.write_bytes(bytes(data))
    assert not store.is_done("c1")
    with pytest.raises(StoreError, match="missing or corrupt"):
        store.load_features("c1")


def test_failed_cell_is_not_done(tmp_path):
    store = RunStore(tmp_path)
    store.write_failed_cell("c2", {"cell_id": "c2"}, "Traceback ...")
    assert not store.is_done("c2")
    assert store.read_cell("c2")["error"] == "Traceback ..."


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    atomic_write_bytes(tmp_path / "a.bin", b"1")
    atomic_write_bytes(tmp_path / "a.bin", b"22")
    assert (tmp_path / "a.bin").read_bytes() == b"22"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def _hold_lock(path, ready, release):
    with RunStore(path):
        ready.set()
        release.wait(20)


def test_second_writer_gets_a_clear_error(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(tmp_path, ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(StoreError, match=r"in use by another evalkit process \(pid \d+\)"):
            RunStore(tmp_path).acquire_lock()
    finally:
        release.set()
        proc.join(30)
    with RunStore(tmp_path):  # free again once the holder exits
        pass


@pytest.mark.parametrize("name", ["../../etc", "a/b", "..", "x\x00y", "/abs"])
def test_cell_ids_cannot_escape_the_run_folder(tmp_path, name):
    store = RunStore(tmp_path)
    d = store.cell_dir(name).resolve()
    assert d.parent == (tmp_path / "cells").resolve()
    assert safe_component(name) not in ("", ".", "..")
