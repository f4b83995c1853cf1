"""PeakMemory: the peak RSS of a cell is the peak inside it, transient allocations included."""

from __future__ import annotations

import mmap
import sys

import psutil
import pytest

from evalkit.run.timing import PeakMemory


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
