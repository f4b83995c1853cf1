"""Starting the shared sampling loop from an image: SDEdit img2img, inpainting by mask blend, SDEdit upscaling.

**img2img** (SDEdit, Meng et al. 2022) as diffusers' img2img pipelines do it: ``set_timesteps(steps)``, keep the
tail ``timesteps[t_start·order:]`` with ``t_start = steps − min(int(steps·strength), steps)``
(:func:`~evalkit.generate.planning.strength_start`), ``set_begin_index`` where the scheduler has it, and start from
the source noised to the first kept timestep with the scheduler's own ``add_noise`` (flow matching:
``scale_noise``): σ-parameterised schedulers (Euler, Heun, LMS, DPM2: ``init_noise_sigma`` ≠ 1) return x₀ + σ·ε
there, on the scale their ``scale_model_input`` expects; DDPM-type ones √ᾱ·x₀ + √(1 − ᾱ)·ε; flow (1 − σ)·x₀ + σ·ε.
LCM and TCD are cut the same way (StableDiffusionImg2ImgPipeline's way, not the LCM img2img pipeline's schedule
squeezed into [0, strength·T]). PLMS and LMS cannot start part-way: below strength 1 they are refused
(:data:`~evalkit.generate.planning.NO_MID_START`).

**inpaint**: after every complete scheduler step the known region is put back at the next timestep's noise level,
x = m·x + (1 − m)·noised(source, ε, t_next), with the start's per-sample noise ε, and after the last step
x = m·x + (1 − m)·source exactly, so unmasked pixels equal the source (diffusers' legacy inpainting blend, as in
StableDiffusionInpaintPipeline with a 4-channel UNet). Strength 1 starts from pure noise, as that pipeline does.
Mid-way through a second-order step (Heun, DPM2, DPM++ SDE: ``state_in_first_order`` false) nothing is blended: the
scheduler completes the step from the sample it stored. RePaint's resampling (jumping back and re-denoising, Lugmayr
et al. 2022) is not done: the masked region's border can disagree with the known region more than RePaint's would.

**upscale** (×k super-resolution): the low-resolution input upsampled bicubically to the model's size, then SDEdit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from evalkit.errors import ConfigError
from evalkit.generate.adapter import GenerationRequest
from evalkit.generate.denoise import Denoiser, run_steps
from evalkit.generate.planning import check_mid_start, check_strength, strength_start
from evalkit.generate.samplers import set_timesteps

_DEFAULT_STRENGTH = {"inpaint": 1.0}  # diffusers' inpaint default; img2img and upscale: the suite must say


def task_strength(task: str, strength: float | None) -> float:
    """The strength a task runs at: the request's, else inpaint's default 1 (regenerate the masked region from
    pure noise); img2img and upscale have none that fits every use and ask for it."""
    if strength is None:
        if task not in _DEFAULT_STRENGTH:
            raise ConfigError(
                f"task {task}: set strength (the fraction of the schedule run from the noised input, in (0, 1]; "
                "e.g. `strength: [0.5]` in the suite)"
            )
        return _DEFAULT_STRENGTH[task]
    return check_strength(strength)


def start_timesteps(
    scheduler: Any, steps: int, strength: float, *, sampler: str, shape: Any = None, device: Any = None
) -> Any:
    """Set ``scheduler``'s timesteps for ``steps`` and return the tail a start at ``strength`` walks, with the
    scheduler told where it begins (``set_begin_index``, so σ-indexed schedulers step from the right sigma)."""
    set_timesteps(scheduler, steps, shape, device=device)
    t_start = strength_start(steps, strength)
    check_mid_start(sampler, type(scheduler).__name__, t_start)
    begin = t_start * int(getattr(scheduler, "order", 1))
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    return scheduler.timesteps[begin:]


def noised(scheduler: Any, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor, sampler: str = "") -> torch.Tensor:
    """``x0`` at timestep ``t``'s noise level with ``noise``, by the scheduler's own forward process."""
    t = torch.as_tensor(t).reshape(1)
    if hasattr(scheduler, "scale_noise"):  # flow matching: (1 − σ)·x₀ + σ·ε
        return scheduler.scale_noise(x0, t, noise)
    if hasattr(scheduler, "add_noise"):
        return scheduler.add_noise(x0, noise, t)
    raise ConfigError(
        f"sampler {sampler or type(scheduler).__name__} cannot start part-way through its schedule: its scheduler "
        f"{type(scheduler).__name__} has neither add_noise nor scale_noise to noise the input with"
    )


def sdedit(
    denoiser: Denoiser,
    scheduler: Any,
    x0: torch.Tensor,
    noise: torch.Tensor,
    steps: int,
    strength: float,
    *,
    sampler: str,
    keep_mask: torch.Tensor | None = None,
    **loop: Any,
) -> torch.Tensor:
    """Denoise ``x0`` noised to ``strength`` with ``scheduler``; with ``keep_mask`` (float, 1 = generate) the rest
    is held to the source (inpainting). ``loop``: :func:`~evalkit.generate.denoise.run_steps`' keywords (cond,
    uncond, guidance, generators, guidance_method, guidance_options)."""
    timesteps = start_timesteps(scheduler, steps, strength, sampler=sampler, shape=x0.shape, device=x0.device)
    if keep_mask is not None and strength >= 1.0:
        x = noise * getattr(scheduler, "init_noise_sigma", 1.0)
    else:
        x = noised(scheduler, x0, noise, timesteps[:1], sampler)
    blend = None if keep_mask is None else _blend(scheduler, x0, noise, keep_mask, timesteps)
    return run_steps(denoiser, scheduler, x, timesteps, after_step=blend, **loop)


def _blend(scheduler: Any, x0: torch.Tensor, noise: torch.Tensor, m: torch.Tensor, timesteps: Any) -> Any:
    last = len(timesteps) - 1

    def after_step(i: int, x: torch.Tensor) -> torch.Tensor:
        if i == last:
            return m * x + (1 - m) * x0  # the known region is the source, exactly
        if not getattr(scheduler, "state_in_first_order", True):
            return x  # half-way through a second-order step: the scheduler finishes it from its stored sample
        return m * x + (1 - m) * noised(scheduler, x0, noise, timesteps[i + 1 : i + 2])

    return after_step


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) → float (B, 1, H, W) in [-1, 1]: channel 0 (the zoo models are gray)."""
    return torch.as_tensor(images)[:, :1].float() / 127.5 - 1.0


def upsampled(control: torch.Tensor, size: int) -> torch.Tensor:
    """The low-resolution input (uint8 (B, C, h, w), ``size`` a multiple of h and w) in [-1, 1] at ``size``:
    bicubic, ``align_corners=False``, clamped (bicubic overshoots at edges)."""
    x = to_model_range(control)
    up = torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    return up.clamp(-1.0, 1.0)


def task_inputs(
    request: GenerationRequest, sl: slice, size: int, device: Any = "cpu"
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """For the samples ``sl`` of ``request``: the start image x₀ in [-1, 1] (B, 1, size, size) and, for inpaint, the
    float mask (1 = generate)."""
    if request.task == "upscale":
        control = _checked(request, "control", None)
        h, w = control.shape[-2:]
        if h != w or size % h:
            raise ConfigError(
                f"task upscale: control images must be square with {size} a multiple of their size; got {h}×{w}"
            )
        return upsampled(control[sl], size).to(device), None
    x0 = to_model_range(_checked(request, "images", size)[sl]).to(device)
    if request.task != "inpaint":
        return x0, None
    mask = _checked(request, "masks", size)[sl]
    return x0, (torch.as_tensor(mask)[:, :1] > 0).float().to(device)


def _checked(request: GenerationRequest, field: str, size: int | None) -> torch.Tensor:
    """``request.<field>``, checked present, aligned with the indices and (``size``) at the model's resolution."""
    value = getattr(request, field)
    if value is None:
        raise ConfigError(f"task {request.task}: the request has no {field} (conditions: {field})")
    value = torch.as_tensor(value)
    n = len(np.asarray(request.indices))
    if value.ndim != 4 or value.shape[0] != n:
        raise ConfigError(
            f"task {request.task}: {field} must be (N, C, H, W) for the N = {n} samples; got {tuple(value.shape)}"
        )
    if size is not None and tuple(value.shape[-2:]) != (size, size):
        raise ConfigError(
            f"task {request.task}: {field} must be {size}×{size} for this model; got {tuple(value.shape[-2:])}"
        )
    return value
