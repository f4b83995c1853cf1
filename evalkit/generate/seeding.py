"""Per-sample randomness: sample ``i`` of a cell depends on ``(seed, i)`` only.

Every sample gets its own CPU ``torch.Generator``. The initial noise and, for stochastic samplers,
every later noise draw come from it, so images do not depend on batch size, device count or the
point where a run was resumed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def sample_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sample ``index`` of a run seeded with ``seed`` (SeedSequence mixing)."""
    state = np.random.SeedSequence([int(seed), int(index)]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)


def sample_generators(seed: int, indices: Sequence[int]) -> list[torch.Generator]:
    """One freshly seeded CPU generator per sample index."""
    return [torch.Generator("cpu").manual_seed(sample_seed(seed, i)) for i in indices]


def initial_noise(generators: Sequence[torch.Generator], shape: tuple[int, ...]) -> torch.Tensor:
    """Stack one ``randn(shape)`` per generator on the CPU: row ``k`` depends on generator ``k`` only."""
    return torch.stack([torch.randn(shape, generator=g, dtype=torch.float32) for g in generators])
