"""Sampler names → diffusers scheduler classes and options, plus model-call accounting.

A *sampler* is a scheduler class with fixed options. The model's own training noise schedule
(``num_train_timesteps``, betas, ``prediction_type``) comes from the adapter; the sampler only
decides how to walk it. Schedulers stay apart from models, as in diffusers.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import diffusers

from evalkit.registry import SAMPLERS


@dataclass(frozen=True)
class SamplerDef:
    name: str
    scheduler: str  # diffusers class name
    options: dict[str, Any] = field(default_factory=dict)
    stochastic: bool = False  # draws fresh noise at every step
    batch_invariant: bool = True  # per-sample noise only; False where the library seeds per batch
    requires: tuple[str, ...] = ()  # extra modules the scheduler imports
    description: str = ""


def register_sampler(defn: SamplerDef) -> SamplerDef:
    return SAMPLERS.register(defn.name, defn)


for _d in [
    SamplerDef("ddpm", "DDPMScheduler", stochastic=True, description="ancestral DDPM (Ho et al. 2020)"),
    SamplerDef("ddim", "DDIMScheduler", {"eta": 0.0}, description="deterministic DDIM, eta=0"),
    SamplerDef(
        "pndm", "PNDMScheduler", {"skip_prk_steps": True}, description="PLMS (PNDM without Runge-Kutta warm-up)"
    ),
    SamplerDef("lms", "LMSDiscreteScheduler", description="linear multistep (k-diffusion lms)"),
    SamplerDef("euler", "EulerDiscreteScheduler", description="Euler (Karras et al. 2022, Alg. 1 without churn)"),
    SamplerDef("euler_a", "EulerAncestralDiscreteScheduler", stochastic=True, description="Euler ancestral"),
    SamplerDef("heun", "HeunDiscreteScheduler", description="Heun 2nd order: two model calls per step but the last"),
    SamplerDef("dpm2", "KDPM2DiscreteScheduler", description="DPM-Solver-2 (k-diffusion dpm_2)"),
    SamplerDef(
        "dpmpp_2m",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2},
        description="DPM-Solver++(2M)",
    ),
    SamplerDef(
        "dpmpp_2m_karras",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
        description="DPM-Solver++(2M) with Karras sigmas",
    ),
    SamplerDef(
        "dpmpp_sde",
        "DPMSolverSDEScheduler",
        stochastic=True,
        batch_invariant=False,
        requires=("torchsde",),
        description="DPM-Solver++ SDE (Brownian tree seeded per batch by diffusers)",
    ),
    SamplerDef("unipc", "UniPCMultistepScheduler", description="UniPC multistep (bh2)"),
    SamplerDef("deis", "DEISMultistepScheduler", description="DEIS multistep, order 2"),
]:
    register_sampler(_d)


def available_samplers() -> list[str]:
    return SAMPLERS.names()


def get_sampler(name: str) -> SamplerDef:
    return SAMPLERS.get(name)


def make_scheduler(name: str, base_config: dict[str, Any], options: dict[str, Any] | None = None):
    """Build sampler ``name`` on a model's training noise schedule ``base_config``.

    ``options`` override the sampler's defaults (e.g. ``{"use_karras_sigmas": True}``).
    """
    defn = get_sampler(name)
    for module in defn.requires:
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"sampler {name!r} needs the package {module!r}: pip install {module}")
    cls = getattr(diffusers, defn.scheduler)
    config = {k: v for k, v in base_config.items() if not k.startswith("_")}
    return cls.from_config(config, **{**defn.options, **(options or {})})


def model_calls_per_sample(
    name: str, steps: int, base_config: dict[str, Any], options: dict[str, Any] | None = None
) -> int:
    """Denoiser forward calls one trajectory makes: the length of the scheduler's timestep list.

    Heun-type samplers evaluate the model about twice per step, PLMS once more at the start. The
    runner also *counts* calls; this is the planning estimate (``--dry-run``) and a cross-check.
    """
    scheduler = make_scheduler(name, base_config, options)
    scheduler.set_timesteps(steps)
    return len(scheduler.timesteps)
