"""What a result was computed with: package versions, git commit, device, CPU and its load. Recorded in run.json."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import torch

from evalkit.errors import ConfigError
from evalkit.run.timing import cpu_model, load_average, usable_cores

PACKAGES = [
    "evalkit",
    "torch",
    "torchvision",
    "diffusers",
    "numpy",
    "scipy",
    "pandas",
    "safetensors",
    "torchmetrics",
    "torch-fidelity",
    "clean-fid",
    "pytorch-fid",
    "open_clip_torch",
    "lpips",
    "transformers",
]


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def git_commit(path: Path) -> str | None:
    """HEAD of the git checkout holding ``path`` (with '+dirty' when it has uncommitted changes)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=path,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device!r}: expected auto, cpu, cuda, cuda:N or another torch device") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available here; use --device cpu")
    return device


def describe_device(device: str) -> str:
    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def environment(device: str) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "device": describe_device(device),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(),
        "load_average": load_average(),  # 1, 5, 15 minutes, when run.json was written; per cell: cell.json timing
        "packages": package_versions(),
        "evalkit_git_commit": git_commit(Path(__file__).resolve().parent),
        "cwd_git_commit": git_commit(Path.cwd()),
    }
