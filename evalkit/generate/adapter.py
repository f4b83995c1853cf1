"""The adapter contract: a model that turns conditions, a sampler and seeds into image batches.

Adapters never compute features or metrics. They yield uint8 ``(B, 3, H, W)`` images (or float in
[0, 1], which the runner converts once, rounding) and report the model calls they actually made.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class GenerationRequest:
    """What to generate for (a shard of) one cell. Sample ``indices[k]`` uses seed ``(seed, indices[k])``."""

    indices: np.ndarray  # int64 sample indices within the cell
    seed: int
    sampler: str
    steps: int
    guidance: float
    batch_size: int
    sampler_options: dict[str, Any] = field(default_factory=dict)
    labels: np.ndarray | None = None  # class label per index (aligned with ``indices``)
    prompts: list[str] | None = None  # prompt per index (aligned with ``indices``)
    device: str = "cpu"


@dataclass
class GeneratedBatch:
    images: torch.Tensor  # uint8 (B, 3, H, W), or float in [0, 1]
    indices: np.ndarray  # the sample indices of these images
    model_calls: int  # denoiser forward calls made for this batch (one call may carry a CFG-doubled batch)
    nfe: int  # network evaluations per image: model_calls × 2 under classifier-free guidance


class Adapter(ABC):
    """Base class for model adapters. Subclasses set ``name`` and implement :meth:`generate`."""

    name: str = "adapter"

    @abstractmethod
    def generate(self, request: GenerationRequest) -> Iterator[GeneratedBatch]:
        """Yield batches covering ``request.indices`` in order, at most ``batch_size`` images each."""

    def info(self) -> dict[str, Any]:
        """Facts recorded in the run: weights ids, dtype, image size, options."""
        return {}

    def expected_model_calls(self, sampler: str, steps: int, options: dict[str, Any]) -> int | None:
        """Planning estimate of model calls per trajectory (``--dry-run``); None if unknown."""
        return None

    def close(self) -> None:
        """Free memory held by the model."""


def batched(indices: np.ndarray, batch_size: int) -> Iterator[slice]:
    for start in range(0, len(indices), batch_size):
        yield slice(start, min(start + batch_size, len(indices)))
