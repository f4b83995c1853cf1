"""Shared helpers of the benchmarks: interleaved timing, medians and ratios, machine description, and
the random-weight FID Inception of the tests (``tests/conftest.py``) written to files that evalkit,
clean-fid, torchmetrics and torch-fidelity all load (real weights are not obtainable offline).

Timings on a shared machine are noisy: every benchmark runs evalkit and the reference *in the same
process, interleaved* (A, B, A, B, ...) and reports medians and the ratio of medians.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import contextlib
import datetime as _dt
import importlib.metadata as _md
import json
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))  # conftest: the random Inception, smooth_images, write_pngs

LIBRARIES = (
    "evalkit",
    "numpy",
    "scipy",
    "torch",
    "torchvision",
    "clean-fid",
    "torchmetrics",
    "torch-fidelity",
    "pytorch-fid",
    "pillow",
    "prdc",
)


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    load = ""
    with contextlib.suppress(OSError):
        load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    versions = {}
    for lib in LIBRARIES:
        try:
            versions[lib] = _md.version(lib)
        except _md.PackageNotFoundError:
            versions[lib] = "-"
    import torch

    return {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "nproc": os.cpu_count(),
        "cpu": cpu or platform.processor(),
        "ram": ram,
        "loadavg_at_start": load,
        "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
    }


def print_machine() -> dict[str, Any]:
    m = machine()
    print(
        f"# {m['date']}  nproc={m['nproc']}  cpu={m['cpu']!r}  ram={m['ram']}  load={m['loadavg_at_start']}  "
        f"python={m['python']}  torch threads={m['torch_threads']}"
    )
    print("# " + "  ".join(f"{k}={v}" for k, v in m["versions"].items()), flush=True)
    return m


def interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, *, warmup: bool = False
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Run each function ``repeats`` times, alternating between them (A B A B ...; the order rotates each
    round so neither side always runs first). Returns per-name wall times and each one's last result."""
    names = list(fns)
    times: dict[str, list[float]] = {n: [] for n in names}
    results: dict[str, Any] = {}
    if warmup:
        for n in names:
            results[n] = fns[n]()
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            t0 = time.perf_counter()
            results[n] = fns[n]()
            times[n].append(time.perf_counter() - t0)
    return times, results


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def fmt_s(x: float) -> str:
    return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-300)


def emit(record: dict[str, Any], json_path: str | None) -> None:
    """Append one result record (a JSON line) to ``json_path`` if given."""
    if json_path:
        with open(json_path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")


# -- the random-weight FID Inception ------------------------------------------------------------------


def random_inception_files(folder: Path, seed: int = 1234) -> dict[str, Path]:
    """Write the tests' random FID Inception (``conftest._random_fidelity_inception``) in the forms the
    libraries load: the torch-fidelity/torchmetrics state dict and clean-fid's TorchScript file. Cached:
    an existing folder is reused."""
    from conftest import INCEPTION_TF_FILE, INCEPTION_TS_FILE, write_random_inception

    tf, ts = folder / INCEPTION_TF_FILE, folder / INCEPTION_TS_FILE
    if tf.exists() and ts.exists():
        return {"tf": tf, "clean": ts, "dir": folder}
    return write_random_inception(folder, seed=seed)


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path
