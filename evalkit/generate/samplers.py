"""Sampler names → diffusers scheduler classes and options, plus model-call accounting.

A *sampler* is a scheduler class with fixed options. The model's own training noise schedule
(``num_train_timesteps``, betas, ``prediction_type``) comes from the adapter; the sampler only
decides how to walk it. Schedulers stay apart from models, as in diffusers.
"""

from __future__ import annotations

import functools
import importlib.util
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
# per-batch plumbing the adapters add to a sampler's options, not a setting of the sampler
_PLUMBING = ("noise_sampler_seed",)

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
        return _option_parameters(self.scheduler_class())

    def option_names(self) -> list[str]:
        return sorted(self.option_parameters() or {})

    def check_options(self, options: dict[str, Any]) -> None:
        """Refuse (:class:`~evalkit.suite.options.OptionError`) an option the scheduler does not take, with a
        did-you-mean, or a value whose type differs from the parameter's default (``eta: abc``)."""
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


@functools.cache
def _option_parameters(cls: type) -> dict[str, inspect.Parameter] | None:
    init = keyword_parameters(cls.__init__)
    if init is None:
        return None
    step = keyword_parameters(cls.step, exclude=_NOT_STEP_OPTIONS) or {}
    step = {k: p for k, p in step.items() if p.default is not inspect.Parameter.empty}
    return {**step, **init}


def _step_option_names(cls: type) -> set[str]:
    return set(_option_parameters(cls) or {}) - set(keyword_parameters(cls.__init__) or {})


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


def applies_to(name: str, family: str) -> bool:
    return name == NATIVE or family in get_sampler(name).families


def samplers_for(family: str) -> list[str]:
    """The registered samplers that apply to a model of ``family`` (``native`` always does)."""
    return [s for s in available_samplers() if applies_to(s, family)]


def check_family(name: str, family: str | None, model: str) -> None:
    """Refuse sampler ``name`` on ``model`` of ``family`` when it does not apply, naming those that do.
    ``family`` None (a model that does not say, or no model at all) accepts every sampler."""
    if family is None or applies_to(name, family):
        return
    fit = ", ".join(samplers_for(family))
    raise ConfigError(f"sampler {name} does not apply to model {model} (family {family}); samplers that do: {fit}")


# The built-ins' declared model calls per sample (checked against diffusers for 1-50 steps by
# tests/generate/test_samplers.py); one per step unless listed
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
    ),
    SamplerDef("flow_unipc", "UniPCMultistepScheduler", dict(_FLOW_SOLVER), description="UniPC (bh2) on flow sigmas"),
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
    replace(
        SamplerDef(NATIVE, "(the model's own)", description="the model's own scheduler, its config unchanged"),
        families=tuple(FAMILIES),
    ),
]:
    register_sampler(replace(_d, model_calls=None if _d.name == NATIVE else one_call_per_step))


def available_samplers() -> list[str]:
    return SAMPLERS.names()


def get_sampler(name: str) -> SamplerDef:
    return SAMPLERS.get(name)


def make_scheduler(
    name: str, base_config: dict[str, Any], options: dict[str, Any] | None = None, *, family: str | None = None
):
    """Build sampler ``name`` on a model's training noise schedule ``base_config``.

    ``options`` override the sampler's defaults (e.g. ``{"use_karras_sigmas": True}``). ``family`` (the model's,
    :data:`FAMILIES`) sets the scheduler's ``prediction_type`` where it takes one, so that the model output is read
    as what it is
    (the adapter first refuses a sampler that does not apply: :func:`check_family`). ``native`` rebuilds the class
    named by ``base_config["_class_name"]`` with the config unchanged.
    """
    defn = get_sampler(name)
    for module in defn.requires:
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"sampler {name!r} needs the package {module!r}: pip install {module}")
    cls = _native_class(base_config) if name == NATIVE else defn.scheduler_class()
    config = {k: v for k, v in base_config.items() if not k.startswith("_")}
    merged = {**defn.options, **(options or {})}
    prediction = FAMILIES.get(family) if family is not None and name != NATIVE else None
    if prediction is not None and "prediction_type" in (keyword_parameters(cls.__init__) or {}):
        merged.setdefault("prediction_type", prediction)
    step_names = _step_option_names(cls)
    scheduler = cls.from_config(config, **{k: v for k, v in merged.items() if k not in step_names})
    step_options = {k: v for k, v in merged.items() if k in step_names}
    if step_options:
        _bind_step_options(scheduler, step_options)
    return scheduler


def _native_class(base_config: dict[str, Any]) -> type:
    import diffusers

    cls = getattr(diffusers, str(base_config.get("_class_name")), None)
    if not isinstance(cls, type):
        raise ConfigError(
            f"sampler 'native': the model names no diffusers scheduler ({base_config.get('_class_name')})"
        )
    return cls


def _bind_step_options(scheduler: Any, fixed: dict[str, Any]) -> None:
    """Make every ``scheduler.step`` call use ``fixed`` (e.g. DDIM's ``eta``), in evalkit's loop and in a
    pipeline's own loop alike (a pipeline passes its own ``eta=0.0``: the sampler's value wins). ``from_config``
    would silently drop these: they are ``step()`` arguments, not config keys."""
    step = scheduler.step

    @functools.wraps(step)
    def step_with_options(*args: Any, **kwargs: Any) -> Any:
        return step(*args, **{**kwargs, **fixed})

    scheduler.step = step_with_options


def schedule_info(name: str, scheduler: Any, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The schedule a scheduler walked, read after ``set_timesteps``: its timesteps and sigmas, spacing, class
    and the options it was built with (the sampler's own and the suite's; not per-batch seeds).

    ``sigmas`` are the scheduler's own where it keeps them (Euler-type, DPM-Solver, UniPC: the last is the
    final 0); DDPM/DDIM/PNDM keep none, so theirs are σ_t = √((1 − ᾱ_t)/ᾱ_t) at each timestep, the same noise
    level on the same scale (``sigmas_from`` says which)."""
    import torch  # here, not at the top: listing and validating samplers imports no torch

    timesteps = torch.as_tensor(scheduler.timesteps).detach().cpu()
    sigmas, source = getattr(scheduler, "sigmas", None), "scheduler"
    if sigmas is None and getattr(scheduler, "alphas_cumprod", None) is not None:
        abar = torch.as_tensor(scheduler.alphas_cumprod).detach().cpu().double()[timesteps.long()]
        sigmas, source = ((1 - abar) / abar).sqrt(), "alphas_cumprod"
    overrides = {**get_sampler(name).options, **(options or {})}
    return {
        "scheduler": type(scheduler).__name__,
        "timestep_spacing": scheduler.config.get("timestep_spacing"),
        "config_overrides": {k: v for k, v in overrides.items() if k not in _PLUMBING},
        "timesteps": timesteps.tolist(),
        "sigmas": None if sigmas is None else torch.as_tensor(sigmas).detach().cpu().double().tolist(),
        "sigmas_from": None if sigmas is None else source,
    }


def declared_model_calls(
    name: str, steps: int, options: dict[str, Any] | None = None, *, num_train_timesteps: int
) -> int | None:
    """Model calls per sample from sampler ``name``'s declared rule (:attr:`SamplerDef.model_calls`), with no
    scheduler built and no diffusers imported (``--dry-run``), for a model trained on ``num_train_timesteps``.

    None where only the scheduler can tell (ask :func:`model_calls_per_sample`): a sampler without a rule (a
    plugin's), options set by the suite (they may change the count: PNDM's ``skip_prk_steps``), or steps outside
    1..``num_train_timesteps`` (where a scheduler may refuse or repeat timesteps)."""
    if options or not 1 <= steps <= num_train_timesteps:
        return None
    rule = get_sampler(name).model_calls
    return None if rule is None else int(rule(steps))


def model_calls_per_sample(
    name: str,
    steps: int,
    base_config: dict[str, Any],
    options: dict[str, Any] | None = None,
    *,
    family: str | None = None,
) -> int:
    """Denoiser forward calls one trajectory makes: the length of the scheduler's timestep list.

    Heun-type samplers evaluate the model about twice per step, PLMS once more at the start. The
    runner also *counts* calls; this is the planning estimate (``--dry-run``) and a cross-check.
    """
    scheduler = make_scheduler(name, base_config, options, family=family)
    scheduler.set_timesteps(steps)
    return len(scheduler.timesteps)
