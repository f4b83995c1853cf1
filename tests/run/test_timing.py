"""PeakMemory: the peak RSS of a cell is the peak inside it, transient allocations included; the timing helpers:
spread of repeats, booking of batches, load readings that may be missing, torch's thread count."""

from __future__ import annotations

import math
import mmap
import os
import sys

import numpy as np
import psutil
import pytest
import torch

from evalkit.run import timing
from evalkit.run.timing import PeakMemory, spread


def _touch_transient(mb: int) -> None:
    """Map ``mb`` MB of fresh anonymous memory, write every page, unmap: RSS rises by ``mb`` and falls back.
    (mmap, not numpy: malloc may reuse pages that are already resident.)"""
    buf = mmap.mmap(-1, mb * 2**20)
    for off in range(0, len(buf), mmap.PAGESIZE):
        buf[off] = 1
    buf.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="exact peak via the kernel's VmHWM is Linux-only")
def test_peak_memory_sees_a_transient_allocation_and_only_inside():
    proc = psutil.Process()
    _touch_transient(200)  # a 200 MB peak *before* the measured block must not count
    base = proc.memory_info().rss / 2**20
    with PeakMemory("cpu") as mem:
        _touch_transient(64)
    assert 60 <= mem.peak_rss_mb - base < 150, (mem.peak_rss_mb, base)


def test_spread_is_median_min_max_and_sample_std():
    vals = [0.3, 0.1, 0.7, 0.2]
    got = spread(vals)
    assert got["median"] == pytest.approx(0.25) and (got["min"], got["max"]) == (0.1, 0.7)
    assert got["std"] == pytest.approx(np.std(vals, ddof=1))
    one = spread([0.4])
    assert one["median"] == 0.4 and all(math.isnan(one[k]) for k in ("min", "max", "std"))
    assert math.isnan(spread([])["median"])


def test_batch_timer_books_warmups_repeats_and_partial_batches(monkeypatch):
    now = iter(range(0, 100, 1))  # every clock read advances one second: each batch measures 1 s
    monkeypatch.setattr(timing, "clock", lambda: float(next(now)))
    timer = timing.BatchTimer("cpu", warmup=1, fixed=8)
    for images, extra in ((8, False), (8, False), (3, False), (5, True)):
        with timer.measure():
            pass
        timer.book(images, calls=2, extra=extra)
    assert timer.warmup_s == 1 and timer.samples_s == 2 and timer.extra_s == 1
    # the warm-up and the partial batch are no repeats; an extra batch is, whatever it yielded
    assert timer.repeats == [timing.Repeat(1.0, 8, 2), timing.Repeat(1.0, 5, 2)]
    assert timer.owed(repeats=3) == 1 and timing.BatchTimer("cpu", warmup=2, fixed=8).owed(repeats=3) == 5


def test_machine_load_tolerates_a_system_without_load_averages(monkeypatch):
    def no_load():
        raise OSError("no load average here")

    monkeypatch.setattr(os, "getloadavg", no_load)
    with timing.MachineLoad("cpu") as load:
        load.sample()
    rec = load.record()
    assert rec["load_before"] is None and rec["load_peak_1m"] is None and rec["warnings"] == []
    assert rec["gpu"] is None and rec["usable_cores"] >= 1


def test_torch_threads_restores_the_count_even_on_error():
    before = torch.get_num_threads()
    want = 1 if before != 1 else 2
    with pytest.raises(RuntimeError), timing.torch_threads(want):
        assert torch.get_num_threads() == want
        raise RuntimeError("cell failed")
    assert torch.get_num_threads() == before
