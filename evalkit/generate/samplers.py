"""Sampler names → diffusers scheduler classes and options, plus model-call accounting.

A *sampler* is a scheduler class with fixed options. The model's own training noise schedule
(``num_train_timesteps``, betas, ``prediction_type``) comes from the adapter; the sampler only
decides how to walk it. Schedulers stay apart from models, as in diffusers. The sampler definitions and the
built-ins are in :mod:`evalkit.generate.sampler_defs` (re-exported here); this module builds their schedulers,
sets their timesteps (with a resolution-dependent shift where asked), records the schedule and counts model calls.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
from collections.abc import Sequence
from typing import Any

from evalkit.errors import ConfigError
from evalkit.generate.sampler_defs import (
    FAMILIES,
    NATIVE,
    SPACINGS,
    SamplerDef,
    one_call_per_step,
    plms_calls,
    register_sampler,
    step_option_names,
    two_calls_per_step_but_the_last,
)
from evalkit.registry import SAMPLERS
from evalkit.suite.options import keyword_parameters

__all__ = [  # the definitions live in sampler_defs; re-exported here, their public home
    "FAMILIES",
    "NATIVE",
    "SPACINGS",
    "SamplerDef",
    "one_call_per_step",
    "plms_calls",
    "register_sampler",
    "two_calls_per_step_but_the_last",
]

# per-batch plumbing the adapters add to a sampler's options, not a setting of the sampler
_PLUMBING = ("noise_sampler_seed",)


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
    step_names = step_option_names(cls)
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
    shift = getattr(scheduler, _SHIFT_ATTR, None)
    return {
        "scheduler": type(scheduler).__name__,
        "timestep_spacing": scheduler.config.get("timestep_spacing"),
        "config_overrides": {k: v for k, v in overrides.items() if k not in _PLUMBING},
        "timesteps": timesteps.tolist(),
        "sigmas": None if sigmas is None else torch.as_tensor(sigmas).detach().cpu().double().tolist(),
        "sigmas_from": None if sigmas is None else source,
        **({"dynamic_shift": dict(shift)} if shift else {}),
    }


# calculate_shift's parameters where a scheduler config has none (DPMSolverMultistep and UniPC keep no base/max
# shift): the defaults diffusers' Flux and SD3 pipelines read them with
_SHIFT_DEFAULTS = {"base_image_seq_len": 256, "max_image_seq_len": 4096, "base_shift": 0.5, "max_shift": 1.15}
_SHIFT_ATTR = "_evalkit_dynamic_shift"  # set by :func:`set_timesteps`, read by :func:`schedule_info`


def image_seq_len(height: int, width: int) -> int:
    """The sequence length a resolution-dependent shift is computed from: the sampled tensor in 2×2 patches,
    (h // 2)·(w // 2), as Flux and SD3 patchify their latents (a 1024² image, 128² latents: 4096). evalkit's loop
    counts what it samples: latents for a latent model, pixels for a pixel-space one (32² pixels: 256)."""
    return (height // 2) * (width // 2)


def calculate_shift(
    seq_len: int, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5, max_shift: float = 1.15
) -> float:
    """mu, linear in the sequence length: base_shift at base_seq_len, max_shift at max_seq_len. diffusers'
    ``calculate_shift`` (pipelines/flux), transcribed: its module imports transformers, the loop should not."""
    m = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return seq_len * m + (base_shift - m * base_seq_len)


def dynamic_shift(scheduler: Any, seq_len: int) -> dict[str, Any] | None:
    """The resolution-dependent shift for a scheduler built with ``use_dynamic_shifting`` (Flux, SD3.5): mu from
    ``seq_len`` and the scheduler config's base/max shift, with what it was computed from; None otherwise."""
    if not scheduler.config.get("use_dynamic_shifting"):
        return None
    if "mu" not in inspect.signature(scheduler.set_timesteps).parameters:
        return None
    params = {k: scheduler.config.get(k, default) for k, default in _SHIFT_DEFAULTS.items()}
    mu = calculate_shift(
        seq_len, params["base_image_seq_len"], params["max_image_seq_len"], params["base_shift"], params["max_shift"]
    )
    return {"mu": float(mu), "image_seq_len": int(seq_len), **params}


def set_timesteps(scheduler: Any, steps: int, shape: Sequence[int] | None = None, device: Any = None) -> None:
    """``scheduler.set_timesteps(steps)``, with the ``mu`` a scheduler that shifts dynamically needs, computed
    as diffusers' pipelines do from the sampled tensor's ``shape`` (…, H, W) (:func:`image_seq_len`; None: at the
    base sequence length, enough to count timesteps) and recorded for :func:`schedule_info`."""
    if shape is not None:
        seq_len = image_seq_len(*shape[-2:])
    else:
        seq_len = int(scheduler.config.get("base_image_seq_len", _SHIFT_DEFAULTS["base_image_seq_len"]))
    shift = dynamic_shift(scheduler, seq_len)
    scheduler.set_timesteps(steps, device=device, **({"mu": shift["mu"]} if shift else {}))
    setattr(scheduler, _SHIFT_ATTR, shift)


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
    set_timesteps(scheduler, steps)  # a dynamic shift moves the sigmas, not their number
    return len(scheduler.timesteps)
