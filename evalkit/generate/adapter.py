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

from evalkit.errors import ConfigError, RunError


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
    guidance_method: str = "cfg"  # evalkit.generate.guidance: cfg, cfg_rescale, interval, apg, none
    guidance_options: dict[str, Any] = field(default_factory=dict)
    # An image-conditioned task (suite ``task``, :data:`evalkit.suite.tasks.TASKS`); None: text/class-to-image.
    # Its inputs are aligned with ``indices`` (sample i uses source i mod n): ``images`` the source, uint8 (B, 3, H, W);
    # ``masks`` uint8 (B, 1, H, W), 1 where the model generates (inpaint), 0 where it keeps the source; ``control``
    # uint8 (B, 3, h, w), the control map (controlnet) or the low-resolution input (upscale).
    task: str | None = None
    strength: float | None = None  # img2img/inpaint/upscale: the fraction of the schedule run (None: the method's own)
    controlnet_scale: float | None = None
    images: torch.Tensor | None = None
    masks: torch.Tensor | None = None
    control: torch.Tensor | None = None


@dataclass
class GeneratedBatch:
    images: torch.Tensor  # uint8 (B, 3, H, W), or float in [0, 1]
    indices: np.ndarray  # the sample indices of these images
    model_calls: int  # denoiser forward calls made for this batch (one call may carry a CFG-doubled batch)
    nfe: int  # network evaluations per image: model_calls × 2 under classifier-free guidance
    # the schedule the sampler actually walked (:func:`evalkit.generate.samplers.schedule_info`), recorded in the
    # cell so that a sampler's timestep spacing and sigmas are visible; None where an adapter does not say
    schedule: dict[str, Any] | None = None
    # What an adapter that does not generate here reports per image, aligned with ``indices`` (None: not given):
    # the images adapter's manifest ``seconds``/``cost`` columns, the http adapter's measured request latency and
    # priced cost. Rows mark such timings "reported", not "measured".
    reported_seconds: list[float] | None = None
    cost: list[float] | None = None


class Adapter(ABC):
    """Base class for model adapters. Subclasses set ``name`` and implement :meth:`generate`."""

    name: str = "adapter"
    # what the model outputs (:data:`evalkit.generate.samplers.FAMILIES`: eps, v, flow, edm, x0), which decides the
    # samplers that apply to it; None: the adapter does not say (every sampler is accepted)
    family: str | None = None
    # the image-conditioned tasks it runs (:data:`evalkit.suite.tasks.TASKS`); empty: text/class-to-image only
    tasks: tuple[str, ...] = ()

    @abstractmethod
    def generate(self, request: GenerationRequest) -> Iterator[GeneratedBatch]:
        """Yield batches covering ``request.indices`` in order, at most ``batch_size`` images each."""

    def info(self) -> dict[str, Any]:
        """Facts recorded in the run: weights ids, dtype, image size, options."""
        return {}

    def expected_model_calls(self, sampler: str, steps: int, options: dict[str, Any]) -> int | None:
        """Planning estimate of model calls per trajectory (``--dry-run``); None if unknown. An adapter that runs
        tasks also takes ``task=`` and ``strength=`` (the dry run passes them for a task cell)."""
        return None

    def close(self) -> None:
        """Free memory held by the model."""


def check_task(adapter: Adapter, request: GenerationRequest, model: str = "") -> None:
    """Refuse a task the adapter does not run (the model would ignore the source image), naming those it does."""
    if request.task is None or request.task in adapter.tasks:
        return
    can = ", ".join(adapter.tasks) or "none (text/class-to-image only)"
    raise ConfigError(f"model {model or adapter.name} does not run task {request.task!r}; tasks it runs: {can}")


class GenerationError(RunError):
    """A model produced unusable images (NaN/Inf, e.g. from a guidance scale that overflows): the cell fails."""


def check_finite(images: torch.Tensor | np.ndarray, indices: np.ndarray | None = None) -> None:
    """Raise :class:`GenerationError` naming the samples whose images hold NaN or Inf. Call it on the model's
    float output before converting to uint8 (a clamp would turn NaN into black pixels that metrics score)."""
    x = torch.as_tensor(images)
    if not x.is_floating_point() or x.numel() == 0:
        return
    bad = (~torch.isfinite(x.detach())).reshape(x.shape[0], -1).any(1).cpu().numpy()
    if bad.any():
        where = np.flatnonzero(bad)
        samples = np.asarray(indices)[where] if indices is not None else where
        listed = ", ".join(str(int(i)) for i in samples[:20]) + (", ..." if len(samples) > 20 else "")
        raise GenerationError(
            f"the model produced NaN/Inf pixels in {len(samples)} of {len(bad)} images (samples {listed}); "
            "lower the guidance scale or check the model (a NaN image would be scored as black)"
        )


def batched(indices: np.ndarray, batch_size: int) -> Iterator[slice]:
    for start in range(0, len(indices), batch_size):
        yield slice(start, min(start + batch_size, len(indices)))
