"""The noise schedules of the zoo's MNIST UNets, importable without torch (``--dry-run`` plans from it;
:mod:`evalkit.zoo.models` re-exports it)."""

from __future__ import annotations

from typing import Any

# The DDPM noise schedule the UNet was trained with, shipped with it like a diffusers
# ``scheduler_config.json``; ``AnyScheduler.from_config(NOISE_SCHEDULE)`` accepts every key.
# ``clip_sample: False`` as in Stable Diffusion's config: diffusers' DDIM otherwise clips x0 to [-1, 1]
# but keeps the unclipped epsilon, an inconsistency that classifier-free guidance amplifies step after
# step (measured: 50 DDIM steps at guidance 3 fell to 8% class accuracy with clipping, 95% without).
# Other sampler options (timestep spacing, Karras sigmas, ...) stay at each scheduler's defaults.
NOISE_SCHEDULE: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
    "clip_sample": False,
}

# mnist-flow's: rectified flow on sigma in [0, 1] (x_sigma = (1 - sigma) x0 + sigma eps), timesteps sigma * 1000, no
# shift (32x32 pixels: SD3's resolution shift is for latents of thousands of tokens). As its
# ``scheduler_config.json`` would be; ``_class_name`` is the scheduler it samples with natively.
FLOW_SCHEDULE: dict[str, Any] = {
    "_class_name": "FlowMatchEulerDiscreteScheduler",
    "num_train_timesteps": 1000,
    "shift": 1.0,
}
