"""Measuring cost honestly: wall time with CUDA synchronised, and peak memory during a cell."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
import torch


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Stopwatch:
    """Accumulates time spent in ``with sw.measure():`` blocks, synchronising the device around each."""

    def __init__(self, device: str):
        self.device, self.seconds = device, 0.0

    @contextmanager
    def measure(self) -> Iterator[None]:
        synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds += time.perf_counter() - t0


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux ≥ 4.0: VmHWM via clear_refs); False if unavailable."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status_mb("VmHWM") is not None
    except OSError:
        return False


def status_mb(field: str) -> float | None:
    """A memory figure of this process from /proc/self/status in MB: ``VmRSS`` (now), ``VmHWM`` (the kernel's
    exact peak since the last :func:`reset_peak_rss`). None where unreadable (not Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak resident memory (MB) of this process while active; on CUDA also the allocator's max allocated.

    On Linux the kernel's own peak mark (VmHWM) is reset on entry and read on exit: exact, and no thread
    competes with the work being timed. Elsewhere a thread samples RSS every ``interval`` seconds (a 5 ms
    poller cost the 2-core smoke run a few per cent of its generation time)."""

    def __init__(self, device: str, interval: float = 0.02):
        self.device, self.interval = device, interval
        self.peak_rss_mb = 0.0
        self.cuda_peak_mb: float | None = None
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread: threading.Thread | None = None

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.peak_rss_mb = max(self.peak_rss_mb, self._proc.memory_info().rss / 2**20)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        if not reset_peak_rss():
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        hwm = status_mb("VmHWM") if self._thread is None else None
        self.peak_rss_mb = max(self.peak_rss_mb, hwm or 0.0, self._proc.memory_info().rss / 2**20)
        if self.device.startswith("cuda"):
            self.cuda_peak_mb = torch.cuda.max_memory_allocated() / 2**20

    @property
    def peak_mb(self) -> float:
        """The figure reported as ``peak_mem_mb``: CUDA max allocated on GPU, else RSS."""
        return self.cuda_peak_mb if self.cuda_peak_mb is not None else self.peak_rss_mb
