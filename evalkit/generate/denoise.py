"""The sampling loop shared by UNet-style adapters: scheduler steps with classifier-free guidance.

Kept apart from any model (diffusers' rule: schedulers apart from models). The denoiser is any
callable ``eps = denoiser(x, t, cond)``; every call is counted, so NFE is measured, not assumed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from evalkit.generate.adapter import check_finite

Denoiser = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]


class CallCounter:
    """Wraps a denoiser and counts its forward calls (and the images they carried)."""

    def __init__(self, fn: Denoiser):
        self.fn, self.calls, self.images = fn, 0, 0

    def __call__(self, x: torch.Tensor, t: torch.Tensor, cond: Any) -> torch.Tensor:
        self.calls += 1
        self.images += x.shape[0]
        return self.fn(x, t, cond)


def guided_eps(
    denoiser: Denoiser,
    x: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance: float,
) -> torch.Tensor:
    """ε̂ = ε(x, ∅) + w·(ε(x, c) − ε(x, ∅)); one batched call. ``w = 1`` skips the unconditional pass."""
    if uncond is None or guidance == 1.0:
        return denoiser(x, t, cond)
    eps_c, eps_u = denoiser(torch.cat([x, x]), t, torch.cat([cond, uncond])).chunk(2)
    return eps_u + guidance * (eps_c - eps_u)


def sample(
    denoiser: Denoiser,
    scheduler: Any,
    noise: torch.Tensor,
    steps: int,
    *,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance: float,
    generators: Sequence[torch.Generator],
) -> torch.Tensor:
    """Run ``scheduler`` for ``steps`` from unit-variance ``noise``; returns the final sample x₀.

    ``generators`` (one per sample) feed the scheduler's per-step noise where it takes any, so
    stochastic samplers stay per-sample deterministic too.
    """
    scheduler.set_timesteps(steps, device=noise.device)
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    x = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        x_in = scheduler.scale_model_input(x, t)
        eps = guided_eps(denoiser, x_in, t, cond, uncond, guidance)
        kwargs = {"generator": list(generators)} if takes_generator else {}
        x = scheduler.step(eps, t, x, **kwargs).prev_sample
    return x


def to_uint8(x: torch.Tensor, indices: np.ndarray | None = None) -> torch.Tensor:
    """[-1, 1] float images → uint8 (B, 3, H, W), rounding (not truncating); gray is repeated to RGB.

    NaN/Inf is a :class:`~evalkit.generate.adapter.GenerationError` naming the samples (``indices``, else the
    positions in the batch): clamping would turn it into black pixels that every metric would score."""
    check_finite(x, indices)
    img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return img.repeat(1, 3, 1, 1) if img.shape[1] == 1 else img
