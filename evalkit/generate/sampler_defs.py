"""The sampler definitions: :class:`SamplerDef`, the model families, the model-call rules and the built-ins.

Kept apart from :mod:`evalkit.generate.samplers` (building schedulers, the recorded schedule, model calls), which
imports this module and re-exports its public names, so that ``from evalkit.generate.samplers import SamplerDef,
register_sampler`` keeps working. Nothing here imports diffusers at import time (``evalkit list`` and suite
validation stay light).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from evalkit.errors import ConfigError
from evalkit.registry import SAMPLERS
from evalkit.suite.options import OptionError, check_names, check_values, keyword_parameters

# diffusers' timestep spacings (``timestep_spacing``): where a few steps start, see the README's "Timing and
# sampler settings" (Lin et al. 2024: leading skips the high-noise end; trailing starts at the last train step)
SPACINGS = ("leading", "linspace", "trailing")

# ``step()`` parameters that are not options: evalkit passes the generators; the rest are tensors or plumbing.
_NOT_STEP_OPTIONS = ("model_output", "timestep", "sample", "generator", "variance_noise", "return_dict")

# What a model's output is, by family: the scheduler ``prediction_type`` it is read as (None: the scheduler's own
# convention; EDM schedulers precondition the raw network output F of Karras et al. 2022 themselves)
FAMILIES: dict[str, str | None] = {
    "eps": "epsilon",  # noise ε
    "v": "v_prediction",  # velocity v = α·ε − σ·x₀ (Salimans & Ho 2022)
    "flow": "flow_prediction",  # flow-matching velocity dx/dt = ε − x₀ (rectified flow)
    "edm": None,  # EDM-preconditioned network output (the scheduler applies c_skip, c_out)
    "x0": "sample",  # the clean image x₀
}
NATIVE = "native"  # the model's own scheduler, its config unchanged: applies to every family


@dataclass(frozen=True)
class SamplerDef:
    name: str
    scheduler: str  # diffusers class name
    options: dict[str, Any] = field(default_factory=dict)
    stochastic: bool = False  # draws fresh noise at every step
    batch_invariant: bool = True  # per-sample noise only; False where the library seeds per batch
    requires: tuple[str, ...] = ()  # extra modules the scheduler imports
    description: str = ""
    # Model calls per sample as a function of steps, declared so that a plan (``--dry-run``) need not import
    # diffusers (see :func:`declared_model_calls`); None: only the scheduler can tell (``model_calls_per_sample``)
    model_calls: Callable[[int], int] | None = None
    families: tuple[str, ...] = ("eps", "v")  # the model families (:data:`FAMILIES`) whose output it can step on
    # options the scheduler takes but that are wrong with this sampler's fixed ones, refused when set true:
    # option → why (e.g. diffusers drops ``use_flow_sigmas`` under ``use_exponential_sigmas``)
    refused_options: dict[str, str] = field(default_factory=dict)

    def scheduler_class(self) -> type:
        if self.name == NATIVE:
            raise ConfigError("sampler 'native' is the model's own scheduler: its class is known only from the model")
        import diffusers  # here, not at import: `evalkit list` and suite validation load no diffusers/torch

        cls = getattr(diffusers, self.scheduler, None)
        if not isinstance(cls, type):
            raise ConfigError(f"sampler {self.name!r}: diffusers has no scheduler class {self.scheduler!r}")
        return cls

    def option_parameters(self) -> dict[str, inspect.Parameter] | None:
        """What a suite's ``samplers[].options`` may set: the scheduler's ``__init__`` parameters (its config
        keys) and the options its ``step()`` takes (DDIM's ``eta``, Euler's ``s_churn``, ...). None for a
        scheduler whose ``__init__`` takes ``**kwargs`` or for ``native`` (the model's own, unknown before it is
        built): its options cannot be listed, so they are not checked."""
        if self.name == NATIVE:
            return None
        return scheduler_option_parameters(self.scheduler_class())

    def option_names(self) -> list[str]:
        return sorted(self.option_parameters() or {})

    def check_options(self, options: dict[str, Any]) -> None:
        """Refuse (:class:`~evalkit.suite.options.OptionError`) an option the scheduler does not take, with a
        did-you-mean, a value whose type differs from the parameter's default (``eta: abc``), or an option this
        sampler refuses (:attr:`refused_options`)."""
        if not options:
            return
        params = self.option_parameters()
        if params is None:
            return
        owner = f"sampler {self.name} ({self.scheduler})"
        check_names(options, params, owner)
        check_values(options, params, owner)
        spacing = options.get("timestep_spacing")
        if spacing is not None and spacing not in SPACINGS:
            raise OptionError(
                "timestep_spacing",
                f"option 'timestep_spacing' for {owner}: expected one of {', '.join(SPACINGS)}; got {spacing!r}",
            )
        for option, why in self.refused_options.items():
            if options.get(option):
                raise OptionError(option, f"option {option!r} for {owner}: refused, {why}; got {options[option]!r}")


@functools.cache
def scheduler_option_parameters(cls: type) -> dict[str, inspect.Parameter] | None:
    """A scheduler class's settable options: its ``__init__`` keywords and the defaulted keywords of ``step()``."""
    init = keyword_parameters(cls.__init__)
    if init is None:
        return None
    step = keyword_parameters(cls.step, exclude=_NOT_STEP_OPTIONS) or {}
    step = {k: p for k, p in step.items() if p.default is not inspect.Parameter.empty}
    return {**step, **init}


def step_option_names(cls: type) -> set[str]:
    """The options that go to ``step()`` (not config keys: ``from_config`` would drop them)."""
    return set(scheduler_option_parameters(cls) or {}) - set(keyword_parameters(cls.__init__) or {})


def one_call_per_step(steps: int) -> int:
    return steps


def two_calls_per_step_but_the_last(steps: int) -> int:
    """Heun-type second-order steps: a second model call in every step but the last (k-diffusion's convention)."""
    return 2 * steps - 1


def plms_calls(steps: int) -> int:
    """PLMS (PNDM with ``skip_prk_steps``): one call more than steps, for its second-order warm-up step; 1 at 1."""
    return steps + 1 if steps > 1 else 1


def register_sampler(defn: SamplerDef) -> SamplerDef:
    unknown = [f for f in defn.families if f not in FAMILIES]
    if unknown:
        raise ConfigError(f"sampler {defn.name!r}: unknown model families {unknown}; known: {', '.join(FAMILIES)}")
    return SAMPLERS.register(defn.name, defn)


# The built-ins' declared model calls per sample (checked against diffusers for 1-50 steps by
# tests/generate/test_sampler_calls.py); one per step unless listed
_CALLS: dict[str, Callable[[int], int]] = {
    "heun": two_calls_per_step_but_the_last,
    "dpm2": two_calls_per_step_but_the_last,
    "dpmpp_sde": two_calls_per_step_but_the_last,
    "pndm": plms_calls,
}

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
    register_sampler(replace(_d, model_calls=_CALLS.get(_d.name, one_call_per_step)))

# samplers by family (issue 17); every calls rule is checked against diffusers for 1-50 steps by
# tests/generate/test_sampler_families.py
_FLOW_SOLVER = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
# DPMSolverMultistep and UniPC take these, but diffusers' set_timesteps then walks the DDPM betas' σ (up to ~157)
# instead of flow sigmas in [0, 1] (UniPC maps only Karras sigmas back to flow): a flow model would be stepped on
# the wrong schedule (tests/generate/test_schedule.py shows it). Their flow sigmas take ``flow_shift``.
_NOT_FLOW = "diffusers ignores use_flow_sigmas under it and walks the DDPM σ schedule, not flow sigmas in [0, 1] "
_FLOW_SOLVER_REFUSED = {
    "use_karras_sigmas": _NOT_FLOW + "(flow_euler and flow_lcm take it)",
    "use_exponential_sigmas": _NOT_FLOW + "(flow_euler and flow_lcm take it)",
    "use_beta_sigmas": _NOT_FLOW + "(flow_euler and flow_lcm take it)",
    "use_lu_lambdas": _NOT_FLOW + "(a DDPM-schedule option)",
}
for _d in [
    SamplerDef("flow_euler", "FlowMatchEulerDiscreteScheduler", description="flow-matching Euler (SD3, Flux)"),
    SamplerDef(
        "flow_heun",
        "FlowMatchHeunDiscreteScheduler",
        model_calls=two_calls_per_step_but_the_last,
        description="flow-matching Heun: two model calls per step but the last",
    ),
    SamplerDef(
        "flow_euler_sde",
        "FlowMatchEulerDiscreteScheduler",
        {"stochastic_sampling": True},
        stochastic=True,
        description="flow-matching Euler, stochastic: re-noises x0 to the next sigma at every step",
    ),
    SamplerDef(
        "flow_dpmpp_2m",
        "DPMSolverMultistepScheduler",
        {**_FLOW_SOLVER, "algorithm_type": "dpmsolver++", "solver_order": 2},
        description="DPM-Solver++(2M) on flow sigmas",
        refused_options=_FLOW_SOLVER_REFUSED,
    ),
    SamplerDef(
        "flow_unipc",
        "UniPCMultistepScheduler",
        dict(_FLOW_SOLVER),
        description="UniPC (bh2) on flow sigmas",
        refused_options={k: v for k, v in _FLOW_SOLVER_REFUSED.items() if k != "use_karras_sigmas"},
    ),
    SamplerDef(
        "flow_lcm", "FlowMatchLCMScheduler", stochastic=True, description="flow-matching LCM (few-step distilled)"
    ),
]:
    register_sampler(replace(_d, families=("flow",), model_calls=_d.model_calls or one_call_per_step))
for _d in [
    SamplerDef("lcm", "LCMScheduler", stochastic=True, description="latent consistency model (few-step distilled)"),
    SamplerDef("tcd", "TCDScheduler", stochastic=True, description="trajectory consistency distillation (gamma 0.3)"),
    SamplerDef(
        "dpmpp_3m_sde",
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
        stochastic=True,
        description="DPM-Solver++(3M) SDE",
    ),
    SamplerDef("sa_solver", "SASolverScheduler", stochastic=True, description="SA-Solver (stochastic Adams)"),
    replace(
        SamplerDef("edm_euler", "EDMEulerScheduler", description="EDM Euler (Karras et al. 2022)"), families=("edm",)
    ),
    replace(
        SamplerDef("edm_dpmpp_2m", "EDMDPMSolverMultistepScheduler", description="DPM-Solver++(2M) on EDM sigmas"),
        families=("edm",),
    ),
    # Consistency models (Song et al. 2023): step() forms x₀ = c_skip(σ)·x + c_out(σ)·F from the raw network
    # output F itself (the boundary-condition scalings of the paper's appendix C, EDM's with σ − σ_min) and
    # scale_model_input divides by √(σ² + σ_data²) (EDM's c_in): like the EDM schedulers it steps on the
    # unpreconditioned F of an EDM-parameterised network, so its family is edm; an ε, v or flow output would be
    # read as F. Re-noises to the next σ at every step but a single one. Steps ≤ num_train_timesteps (40 by
    # default, as OpenAI's consistency-distilled models are trained).
    replace(
        SamplerDef(
            "cm", "CMStochasticIterativeScheduler", stochastic=True, description="consistency model multistep sampling"
        ),
        families=("edm",),
    ),
    replace(
        SamplerDef(NATIVE, "(the model's own)", description="the model's own scheduler, its config unchanged"),
        families=tuple(FAMILIES),
    ),
]:
    register_sampler(replace(_d, model_calls=None if _d.name == NATIVE else one_call_per_step))
