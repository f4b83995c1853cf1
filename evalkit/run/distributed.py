"""Scale-out under ``torchrun``: shard each cell's samples across ranks, gather to rank 0.

``torchrun --nproc-per-node K -m evalkit run SUITE`` starts K copies of the command. Each rank
generates and extracts features for its own share of every cell; rank 0 gathers the per-sample
features, kept images and costs, computes the metrics and is the only writer of the run folder.

Why the shards are *contiguous runs of whole batches*: a batch then holds exactly the samples it
holds in a one-process run, so images and features are bitwise the same (sample i already depends
on (seed, i) only, but a different batch composition may round differently in the last bit); and
gathering in rank order restores sample order. Objects travel over gloo (CPU) even on GPUs, so big
feature arrays are never copied through device memory.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import numpy as np
import torch

from evalkit.errors import RunError
from evalkit.run.environment import resolve_device

T = TypeVar("T")
TIMEOUT = timedelta(seconds=float(os.environ.get("EVALKIT_DIST_TIMEOUT_S", 4 * 3600)))  # rank 0 may cache references


class PeerFailed(RunError):
    """Another rank failed; it reports the error itself (this rank just stops)."""


@dataclass(frozen=True)
class Dist:
    """This process's place in the job; ``Dist()`` is a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return torch.distributed.is_available() and torch.distributed.is_initialized()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, indices: np.ndarray, batch_size: int) -> np.ndarray:
        """This rank's samples: a contiguous run of whole batches (see the module docstring)."""
        n_batches = -(-len(indices) // batch_size)
        lo, hi = (n_batches * self.rank) // self.world_size, (n_batches * (self.rank + 1)) // self.world_size
        return indices[lo * batch_size : hi * batch_size]

    def gather(self, obj: T) -> list[T] | None:
        """Every rank's ``obj`` on rank 0, in rank order; None elsewhere."""
        if not self.enabled:
            return [obj]
        out: list[Any] | None = [None] * self.world_size if self.is_main else None
        torch.distributed.gather_object(obj, out, dst=0)
        return out

    def broadcast(self, obj: T | None) -> T:
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj  # type: ignore[return-value]
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 and hand its result to every rank. If it raises, rank 0 re-raises and the
        other ranks raise :class:`PeerFailed`, so no rank is left waiting in a later collective."""
        result: Any = None
        if self.is_main:
            try:
                result = ("ok", fn())
            except BaseException as e:
                self.broadcast(("error", f"{type(e).__name__}: {e}"))
                raise
        status, value = self.broadcast(result)
        if status == "error":
            raise PeerFailed(f"rank 0 failed: {value}")
        return value


def torchrun_env() -> dict[str, int] | None:
    """RANK, WORLD_SIZE, LOCAL_RANK when started by torchrun (or any launcher that sets them), else None."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return None
    return {
        "rank": int(os.environ["RANK"]),
        "world_size": int(os.environ["WORLD_SIZE"]),
        "local_rank": int(os.environ.get("LOCAL_RANK", os.environ["RANK"])),
    }


def setup(device: str = "auto") -> tuple[Dist, str]:
    """Detect torchrun, join its process group and pick this rank's device.

    ``auto``/``cuda`` become ``cuda:LOCAL_RANK`` where CUDA is available; the backend is gloo on CPU and
    ``cpu:gloo,cuda:nccl`` on GPUs. Outside torchrun: ``(Dist(), resolve_device(device))``.
    """
    env = torchrun_env()
    if env is None:
        return Dist(), resolve_device(device)
    dist = Dist(**env)
    if device in ("auto", "cuda") and torch.cuda.is_available():
        device = f"cuda:{dist.local_rank}"
    device = resolve_device(device)
    if not torch.distributed.is_initialized():
        if device.startswith("cuda"):
            torch.cuda.set_device(torch.device(device))
        backend = "cpu:gloo,cuda:nccl" if device.startswith("cuda") else "gloo"
        torch.distributed.init_process_group(
            backend=backend, rank=dist.rank, world_size=dist.world_size, timeout=TIMEOUT
        )
    return dist, device


def shutdown() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
