"""The sampling loop shared by UNet-style adapters: scheduler steps with classifier-free guidance.

Kept apart from any model (diffusers' rule: schedulers apart from models). The denoiser is any
callable ``model_output = denoiser(x, t, cond)``: ε, v, x₀ or flow velocity, whatever the model's family
(:data:`evalkit.generate.samplers.FAMILIES`) says; the scheduler is built to read it as that
(``prediction_type``), so nothing here assumes ε. Every call is counted, so NFE is measured, not assumed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from evalkit.generate import guidance as guidance_methods
from evalkit.generate.adapter import check_finite
from evalkit.generate.samplers import set_timesteps

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
    *,
    method: str = "cfg",
    options: dict[str, Any] | None = None,
    sigma: float | None = None,
    state: dict[str, Any] | None = None,
) -> torch.Tensor:
    """The guided prediction of ``method`` (:mod:`evalkit.generate.guidance`; ``cfg``: ε̂ = ε(x, ∅) + w·(ε(x, c) −
    ε(x, ∅))), from one batched call. A single conditional call where the method needs no ε(x, ∅) at this step
    (``w = 1`` for cfg, ``none``, ``interval`` outside [σ_lo, σ_hi]) or there is no ``uncond``. ``sigma``: the
    step's noise level (``interval``); ``state``: one dict per trajectory, carried across steps (``apg`` momentum).
    """
    if uncond is None or not guidance_methods.needs_uncond(method, guidance, options, sigma):
        return denoiser(x, t, cond)
    eps_c, eps_u = denoiser(torch.cat([x, x]), t, torch.cat([cond, uncond])).chunk(2)
    return guidance_methods.combine(method, eps_c, eps_u, guidance, options, state)


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
    guidance_method: str = "cfg",
    guidance_options: dict[str, Any] | None = None,
) -> torch.Tensor:
    """Run ``scheduler`` for ``steps`` from unit-variance ``noise``; returns the final sample x₀.

    The denoiser's (guided) output goes to ``scheduler.step`` as it is: the scheduler's ``prediction_type`` says
    what it is. ``generators`` (one per sample) feed the scheduler's per-step noise where it takes any, so
    stochastic samplers stay per-sample deterministic too. Flow-matching schedulers take the model input
    unscaled (they have no ``scale_model_input``). A scheduler built with ``use_dynamic_shifting`` gets the
    ``mu`` of ``noise``'s resolution, computed as diffusers' pipelines do
    (:func:`~evalkit.generate.samplers.set_timesteps`: (H/2)·(W/2) tokens, recorded in the schedule).
    """
    set_timesteps(scheduler, steps, noise.shape, device=noise.device)
    x = noise * getattr(scheduler, "init_noise_sigma", 1.0)  # flow matching starts at unit noise
    return run_steps(
        denoiser,
        scheduler,
        x,
        scheduler.timesteps,
        cond=cond,
        uncond=uncond,
        guidance=guidance,
        generators=generators,
        guidance_method=guidance_method,
        guidance_options=guidance_options,
    )


def run_steps(
    denoiser: Denoiser,
    scheduler: Any,
    x: torch.Tensor,
    timesteps: Sequence[Any],
    *,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    guidance: float,
    generators: Sequence[torch.Generator],
    guidance_method: str = "cfg",
    guidance_options: dict[str, Any] | None = None,
    after_step: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Step ``scheduler`` through ``timesteps`` (its own list, or the tail of it an image-conditioned start walks:
    :mod:`evalkit.generate.partial`) from ``x``, already at the first timestep's noise level; ``after_step(i, x)``
    may replace the sample after step ``i`` (inpainting's blend of the known region)."""
    takes_generator = "generator" in inspect.signature(scheduler.step).parameters
    scale = getattr(scheduler, "scale_model_input", None)
    state: dict[str, Any] = {}  # a guidance method's memory across steps (apg momentum)
    for i, t in enumerate(timesteps):
        x_in = scale(x, t) if scale is not None else x
        sigma = guidance_methods.sigma_at(scheduler, t) if guidance_method == "interval" else None
        model_output = guided_eps(
            denoiser,
            x_in,
            t,
            cond,
            uncond,
            guidance,
            method=guidance_method,
            options=guidance_options,
            sigma=sigma,
            state=state,
        )
        kwargs = {"generator": list(generators)} if takes_generator else {}
        x = scheduler.step(model_output, t, x, **kwargs).prev_sample
        if after_step is not None:
            x = after_step(i, x)
    return x


def to_uint8(x: torch.Tensor, indices: np.ndarray | None = None) -> torch.Tensor:
    """[-1, 1] float images → uint8 (B, 3, H, W), rounding (not truncating); gray is repeated to RGB.

    NaN/Inf is a :class:`~evalkit.generate.adapter.GenerationError` naming the samples (``indices``, else the
    positions in the batch): clamping would turn it into black pixels that every metric would score."""
    check_finite(x, indices)
    img = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return img.repeat(1, 3, 1, 1) if img.shape[1] == 1 else img
