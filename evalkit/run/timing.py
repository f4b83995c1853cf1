"""Measuring cost honestly: wall time with CUDA synchronised, repeats summarised by their median and spread,
the machine's load while they ran, and peak memory during a cell."""

from __future__ import annotations

import contextlib
import math
import os
import platform
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psutil
import torch

clock = time.perf_counter  # read through the module: tests replace it to give batches known durations


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


class Stopwatch:
    """Accumulates time spent in ``with sw.measure():`` blocks, synchronising the device around each;
    ``last`` is the duration of the latest block."""

    def __init__(self, device: str):
        self.device, self.seconds, self.last = device, 0.0, 0.0

    @contextmanager
    def measure(self) -> Iterator[None]:
        synchronize(self.device)
        t0 = clock()
        try:
            yield
        finally:
            synchronize(self.device)
            self.last = clock() - t0
            self.seconds += self.last


@dataclass(frozen=True)
class Repeat:
    """One timed batch of the fixed size: its wall seconds, the images it made and its denoiser calls."""

    seconds: float
    images: int
    calls: int


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, min, max and std (ddof 1) of repeated measurements. The spread (min, max) and std are NaN with
    fewer than two: one measurement says nothing about how much a second would differ."""
    vals = [float(v) for v in values]
    if not vals:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "std": math.nan}
    two = len(vals) >= 2
    return {
        "median": statistics.median(vals),
        "min": min(vals) if two else math.nan,
        "max": max(vals) if two else math.nan,
        "std": statistics.stdev(vals) if two else math.nan,
    }


def reported_summary(values: Sequence[float], n: int) -> dict[str, Any]:
    """What an adapter reported per sample (seconds, cost; NaN where it said nothing) over a cell of ``n``: how many
    samples have a value and how many do not, their median, mean, fastest/slowest (min, max) and total; {} if none."""
    vals = [float(v) for v in values if math.isfinite(v)]
    if not vals:
        return {}
    s = spread(vals)
    return {
        "n": len(vals),
        "missing": n - len(vals),
        "median": s["median"],
        "mean": statistics.fmean(vals),
        "min": None if math.isnan(s["min"]) else s["min"],
        "max": None if math.isnan(s["max"]) else s["max"],
        "total": math.fsum(vals),
    }


class BatchTimer:
    """Times a cell's batches one by one and books each: the first ``warmup`` are warm-up (a model's and a
    scheduler's first calls pay for lazy init and allocator growth), every later one of the ``fixed`` size is a
    repeat, as is every extra batch run for timing alone."""

    def __init__(self, device: str, *, warmup: int, fixed: int):
        self.stopwatch = Stopwatch(device)
        self.warmup, self.fixed = warmup, fixed
        self.batches = self.extra_batches = 0
        self.warmup_s = self.samples_s = self.extra_s = 0.0
        self.repeats: list[Repeat] = []

    def measure(self) -> contextlib.AbstractContextManager[None]:
        return self.stopwatch.measure()

    def book(self, images: int, calls: int, *, extra: bool = False) -> None:
        """Book the batch just measured (``extra``: run for timing only, its images discarded)."""
        seconds = self.stopwatch.last
        self.extra_batches += extra
        if self.batches < self.warmup:
            self.warmup_s += seconds
        else:
            if extra:
                self.extra_s += seconds
            else:
                self.samples_s += seconds
            if images and (extra or images == self.fixed):
                self.repeats.append(Repeat(seconds, images, calls))
        self.batches += 1

    def book_tail(self) -> None:
        """The stream's last, empty pull (the generator finishing) counts as sample time, never as a repeat."""
        self.samples_s += self.stopwatch.last

    def owed(self, repeats: int) -> int:
        """Extra batches still to run: warm-ups the shard's own batches did not cover, then missing repeats."""
        return max(0, self.warmup - self.batches) + max(0, repeats - len(self.repeats))


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` inside the block, the previous count restored after (None: unchanged)."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# -- the machine the timings came from -----------------------------------------------------------------------


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (runnable + waiting processes), None where the OS has none."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def usable_cores() -> int:
    """The logical cores this process may run on (its affinity mask), else all of the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo (Linux), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_facts(device: str) -> dict[str, Any] | None:
    """Name and clocks (MHz, via NVML where installed) of a CUDA device; None on CPU. Each fact that cannot be
    read is left out rather than failing the cell."""
    if not device.startswith("cuda"):
        return None
    out: dict[str, Any] = {}
    dev = torch.device(device)
    for key, read in (
        ("name", lambda: torch.cuda.get_device_name(dev)),
        ("sm_clock_mhz", lambda: torch.cuda.clock_rate(dev)),  # needs pynvml
        ("memory_total_mb", lambda: torch.cuda.get_device_properties(dev).total_memory / 2**20),
    ):
        try:
            out[key] = read()
        except Exception:  # no NVML, an old torch, a driver that refuses: a missing fact, not an error
            pass
    return out


class MachineLoad:
    """The load average before a cell, after each of its batches and after it; warns when the 1-minute average
    during the cell exceeds the usable cores (processes then queue for a CPU and every timing stretches)."""

    def __init__(self, device: str):
        self.device = device
        self.before: list[float] | None = None
        self.after: list[float] | None = None
        self.peak_1m: float | None = None
        self.torch_threads = torch.get_num_threads()

    def __enter__(self) -> MachineLoad:
        self.before = load_average()
        self.torch_threads = torch.get_num_threads()  # entered inside the cell's thread setting
        return self

    def sample(self) -> None:
        now = load_average()
        if now is not None:
            self.peak_1m = now[0] if self.peak_1m is None else max(self.peak_1m, now[0])

    def __exit__(self, *exc: object) -> None:
        self.sample()
        self.after = load_average()

    def record(self) -> dict[str, Any]:
        """What the cell record keeps: load before/after/peak, the CPU, its cores, torch's threads, the GPU."""
        cores = usable_cores()
        warnings = []
        if self.peak_1m is not None and self.peak_1m > cores:
            warnings.append(
                f"machine load {self.peak_1m:.1f} (1-minute average) exceeded the {cores} usable cores during the "
                "cell: other processes competed for the CPU, so its timings are inflated; rerun on an idle machine"
            )
        return {
            "load_before": self.before,
            "load_after": self.after,
            "load_peak_1m": self.peak_1m,
            "cpu_model": cpu_model(),
            "usable_cores": cores,
            "logical_cores": os.cpu_count(),
            "torch_threads": self.torch_threads,
            "gpu": gpu_facts(self.device),
            "warnings": warnings,
        }


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
