"""What every zoo training run shares: the learning-rate shape, seeded batches, weight files written with their
hashes."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from evalkit.zoo.models import sha256_file

Log = Callable[[str], None]
LOG_EVERY = 25


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def batches(n: int, batch_size: int, gen: torch.Generator):
    """Endless index batches: a fresh seeded permutation per epoch."""
    while True:
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n - batch_size + 1, batch_size):
            yield perm[i : i + batch_size]


def write_model(out: Path, files: Sequence[str], state: dict, config: dict, model: str) -> dict:
    """Write safetensors + config JSON; return {file: {sha256, bytes}}."""
    from safetensors.torch import save_file

    save_file(state, str(out / files[0]), metadata={"model": model, "format": "pt"})
    (out / files[1]).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    os.chmod(out / files[0], 0o644)  # safetensors writes 0600; these are shipped package data
    return {f: {"sha256": sha256_file(out / f), "bytes": (out / f).stat().st_size} for f in files}
