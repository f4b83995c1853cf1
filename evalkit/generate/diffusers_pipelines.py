"""What differs between diffusers pipelines, for the diffusers adapter (:mod:`evalkit.generate.diffusers_adapter`).

A text-to-image pipeline runs its own loop: evalkit hands it a scheduler (the suite's sampler), per-sample
generators and initial latents, and the pipeline's keyword arguments for the guidance method. What those are
depends on the pipeline, and is decided here from the pipeline's class, its ``__call__`` signature and its
denoiser's config, never from its weights (so the checks also run before loading, from the config files):

* guidance: classifier-free (one batched or two calls per step), a guidance *embedding* (FLUX.1-dev's
  ``guidance_embeds``, latent consistency models' ``time_cond_proj_dim``: one call per step), or none;
* latents: Flux-style pipelines take their latents packed 2×2 into tokens (``_pack_latents``);
* samplers: flow-matching pipelines pass ``mu`` (resolution-dependent shift) or ``sigmas`` to ``set_timesteps``,
  which not every scheduler takes; the latent consistency pipeline needs ``LCMScheduler``. A sampler that
  cannot run in a pipeline is refused with the samplers that can.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from evalkit.errors import ConfigError
from evalkit.generate.guidance import STANDARD_METHODS, check_supported, options_of
from evalkit.generate.samplers import NATIVE, get_sampler, make_scheduler, model_calls_per_sample, samplers_for


class DiffusersError(ConfigError):
    """A pipeline that cannot be loaded or used as asked; the message says what to do instead."""


DTYPES = {
    "fp32": "float32",
    "float32": "float32",
    "fp16": "float16",
    "float16": "float16",
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
}
ATTENTION = ("default", "sdpa", "eager", "xformers")


def torch_dtype(name: str) -> torch.dtype:
    """The ``dtype`` option's torch dtype (fp32, fp16, bf16 or their torch names)."""
    if name not in DTYPES:
        raise DiffusersError(f"diffusers option 'dtype': expected one of fp32, fp16, bf16; got {name!r}")
    return getattr(torch, DTYPES[name])


def check_attention(attention: str) -> None:
    if attention not in ATTENTION:
        raise DiffusersError(f"diffusers option 'attention': expected one of {', '.join(ATTENTION)}; got {attention!r}")


class ForwardCounter:
    """Wraps ``module.forward`` (outside any torch.compile) and counts calls and the images they carried."""

    def __init__(self, module: torch.nn.Module):
        self.calls = self.images = 0
        inner = module.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            x = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
            self.calls += 1
            self.images += int(x.shape[0]) if isinstance(x, torch.Tensor) else 0
            return inner(*args, **kwargs)

        module.forward = forward

    def snapshot(self) -> tuple[int, int]:
        return self.calls, self.images


_PREDICTION_FAMILIES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0", "flow_prediction": "flow"}


def scheduler_family(config: Mapping[str, Any]) -> str | None:
    """A pipeline's model family from its scheduler config: FlowMatch* → flow, EDM* → edm, else by prediction_type."""
    cls = str(config.get("_class_name", ""))
    if cls.startswith(("FlowMatch", "EDM")):
        return "flow" if cls.startswith("FlowMatch") else "edm"
    return _PREDICTION_FAMILIES.get(config.get("prediction_type", "epsilon"))


# -- guidance -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PipelineSpec:
    """What the adapter needs to know of a pipeline: its class name, ``__call__`` parameters, denoiser config."""

    name: str
    params: frozenset[str]
    denoiser: Mapping[str, Any]

    @classmethod
    def of(cls, pipeline: str, denoiser: Mapping[str, Any]) -> PipelineSpec | None:
        """From the class name in ``model_index.json`` (None where diffusers has no such pipeline class)."""
        import diffusers

        klass = getattr(diffusers, pipeline, None)
        if not isinstance(klass, type):
            return None
        return cls(pipeline, frozenset(inspect.signature(klass.__call__).parameters), dict(denoiser))

    @property
    def embedding(self) -> str | None:
        """The denoiser config key by which it takes the guidance scale as an input (guidance-distilled), or None."""
        if self.denoiser.get("guidance_embeds"):
            return "guidance_embeds"
        return "time_cond_proj_dim" if self.denoiser.get("time_cond_proj_dim") is not None else None

    def methods(self) -> list[str]:
        if self.embedding:
            return ["distilled", "none"]
        return ["cfg", *(["cfg_rescale"] if "guidance_rescale" in self.params else []), "none"]


def guidance_kwargs(
    spec: PipelineSpec, method: str, w: float, options: Mapping[str, Any], negative: str | None, model: str
) -> dict[str, Any]:
    """The pipeline's ``__call__`` keywords for guidance ``method`` at scale ``w``; a clear error where it has none.

    ``distilled``: the scale goes in as the guidance embedding, one call per step. ``cfg`` on a guidance-distilled
    model is refused (it has no trained unconditional prediction and its pipeline runs no CFG); ``cfg`` on a Flux
    pipeline without the embedding (FLUX.1-schnell-like) is its true CFG (``true_cfg_scale``, negative prompt "" by
    default), two calls per step. ``none``: scale 1, one conditional call (the embedding, if any, gets 1)."""
    where = f"{model} ({spec.name})"
    try:
        check_supported(method, tuple(spec.methods()), where)
    except ConfigError as e:
        own_loop = not spec.embedding and method in STANDARD_METHODS
        why = "; the pipeline runs its own loop, which combines the predictions itself" if own_loop else ""
        raise DiffusersError(f"{e}{why}") from None
    if method == "none":
        return {"guidance_scale": 1.0} if "guidance_scale" in spec.params else {}
    if method == "distilled":
        return {"guidance_scale": float(w)}
    if w < 1:
        raise DiffusersError(f"model {where} applies guidance only above 1 (1 = off); got guidance {w:g}")
    out: dict[str, Any] = {}
    if "true_cfg_scale" in spec.params:  # Flux: guidance_scale would only feed an embedding it does not have
        out["true_cfg_scale"] = float(w)
        negative = "" if negative is None else negative  # its true CFG runs only with a negative prompt
    else:
        out["guidance_scale"] = float(w)
    if method == "cfg_rescale":
        out["guidance_rescale"] = options_of(method, dict(options))["phi"]
    if w > 1 and negative is not None and "negative_prompt" in spec.params:
        out["negative_prompt"] = negative
    return out


# -- latents ------------------------------------------------------------------------------------------------------
def is_packed(pipe: Any) -> bool:
    """Flux-style pipelines take latents packed 2×2 into tokens: (B, h/2·w/2, 4·C)."""
    return callable(getattr(type(pipe), "_pack_latents", None)) and callable(
        getattr(type(pipe), "_unpack_latents", None)
    )


def vae_scale(pipe: Any) -> int:
    return int(getattr(pipe, "vae_scale_factor", 1)) if getattr(pipe, "vae", None) is not None else 1


def latent_shape(pipe: Any, denoiser: Any, height: int | None, width: int | None) -> tuple[int, int, int]:
    """(channels, h, w) of one sample's unpacked initial latents at ``height`` × ``width`` (None: the model's size).

    Packed pipelines: C = in_channels / 4 and h = 2·⌊H / (2·scale)⌋, as their ``prepare_latents``; their default
    size is ``default_sample_size``·scale (their transformer has no ``sample_size``)."""
    cfg, scale = denoiser.config, vae_scale(pipe)
    if is_packed(pipe):
        size = int(getattr(pipe, "default_sample_size", 64)) * scale
        h, w = int(height or size), int(width or size)
        return int(cfg.in_channels) // 4, 2 * (h // (2 * scale)), 2 * (w // (2 * scale))
    size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
    h, w = int(height or size * scale), int(width or size * scale)
    return int(cfg.in_channels), h // scale, w // scale


def pipeline_latents(pipe: Any, noise: torch.Tensor) -> torch.Tensor:
    """The initial latents as the pipeline takes them (packed where it packs), from per-sample noise (B, C, h, w)."""
    if not is_packed(pipe):
        return noise
    b, c, h, w = noise.shape
    return type(pipe)._pack_latents(noise, b, c, h, w)


# -- samplers in a pipeline's loop --------------------------------------------------------------------------------
# pipelines whose loop needs one scheduler class: the latent consistency pipeline sets the schedule with
# original_inference_steps and decodes the step's second output as the final image (LCMScheduler's "denoised")
PIPELINE_SCHEDULERS: dict[str, tuple[str, ...]] = {"LatentConsistencyModelPipeline": ("LCMScheduler",)}


def _scheduler_name(sampler: str, base: Mapping[str, Any]) -> str:
    return str(base.get("_class_name")) if sampler == NATIVE else get_sampler(sampler).scheduler


def _set_timesteps_params(scheduler_name: str) -> set[str] | None:
    import diffusers

    cls = getattr(diffusers, scheduler_name, None)
    return set(inspect.signature(cls.set_timesteps).parameters) if isinstance(cls, type) else None


def _fits(sampler: str, base: Mapping[str, Any], pipeline: str | None, needs: Iterable[str] = ()) -> bool:
    name = _scheduler_name(sampler, base)
    if pipeline in PIPELINE_SCHEDULERS and name not in PIPELINE_SCHEDULERS[pipeline]:
        return False
    takes = _set_timesteps_params(name)
    need = set(needs) | ({"mu"} if base.get("use_dynamic_shifting") else set())
    return takes is None or need <= takes


def fitting_samplers(base: Mapping[str, Any], family: str, pipeline: str | None, needs: Iterable[str] = ()) -> str:
    return ", ".join(s for s in samplers_for(family) if _fits(s, base, pipeline, needs))


def check_pipeline_sampler(
    sampler: str, base: Mapping[str, Any], family: str, pipeline: str | None, model: str
) -> None:
    """Refuse a sampler the pipeline's loop cannot run (the family already applies), naming those that can."""
    if _fits(sampler, base, pipeline):
        return
    name, fit = _scheduler_name(sampler, base), fitting_samplers(base, family, pipeline)
    if pipeline in PIPELINE_SCHEDULERS and name not in PIPELINE_SCHEDULERS[pipeline]:
        why = (
            f"{pipeline}'s loop needs {' or '.join(PIPELINE_SCHEDULERS[pipeline])} (it sets the schedule with "
            "original_inference_steps and decodes the step's 'denoised' output)"
        )
    else:
        why = (
            "its scheduler config shifts the schedule by image size (use_dynamic_shifting: the pipeline passes mu "
            f"to set_timesteps), which {name} cannot take"
        )
    raise DiffusersError(
        f"sampler {sampler} ({name}) does not apply to model {model} ({pipeline}): {why}; samplers that do: {fit}"
    )


def sampler_options(sampler: str, base: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The suite's options plus the base config's flow shift under the sampler's own name for it: FlowMatch*
    schedulers call it ``shift``, DPM-Solver/UniPC ``flow_shift`` (a swap would otherwise drop SD3's shift 3)."""
    out = dict(options)
    if sampler == NATIVE:
        return out
    takes = set(inspect.signature(get_sampler(sampler).scheduler_class().__init__).parameters)
    for theirs, ours in (("shift", "flow_shift"), ("flow_shift", "shift")):
        if theirs in base and ours in takes and theirs not in takes and ours not in base:
            out.setdefault(ours, base[theirs])
    return out


def build_scheduler(sampler: str, base: Mapping[str, Any], options: Mapping[str, Any], family: str | None) -> Any:
    return make_scheduler(sampler, dict(base), sampler_options(sampler, base, options), family=family)


def count_model_calls(
    sampler: str, steps: int, base: Mapping[str, Any], options: Mapping[str, Any], family: str | None
) -> int:
    """Denoiser calls of one trajectory (the scheduler's timesteps), for the sampler as the adapter builds it."""
    return model_calls_per_sample(sampler, steps, dict(base), sampler_options(sampler, base, options), family=family)


def guard_scheduler(
    scheduler: Any, generators: list[torch.Generator], refuse: Callable[[list[str]], DiffusersError]
) -> Any:
    """Fit ``scheduler`` into a pipeline's loop: every ``step`` draws its noise from the per-sample ``generators``
    (SD3's and Flux's loops pass none: stochastic samplers would read the global RNG), and a ``set_timesteps``
    argument the scheduler does not take raises ``refuse(names)`` instead of diffusers' TypeError/ValueError.
    The ``mu`` a pipeline passes is kept as ``scheduler.evalkit_pipeline_mu``."""
    step = scheduler.step
    if "generator" in inspect.signature(step).parameters:

        @functools.wraps(step)
        def step_with_generators(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("generator") is None:
                kwargs["generator"] = list(generators)
            return step(*args, **kwargs)

        scheduler.step = step_with_generators
    inner = scheduler.set_timesteps
    sig = inspect.signature(inner)

    def set_timesteps(*args: Any, **kwargs: Any) -> Any:
        missing = [k for k, v in kwargs.items() if v is not None and k not in sig.parameters]
        if missing:
            raise refuse(missing)
        if kwargs.get("mu") is not None:  # the pipeline's resolution-dependent shift, for the recorded schedule
            scheduler.evalkit_pipeline_mu = float(kwargs["mu"])
        return inner(*args, **{k: v for k, v in kwargs.items() if k in sig.parameters})

    # say that it takes sigmas/timesteps, so diffusers' retrieve_timesteps calls it and it can refuse clearly
    extra = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None) for n in ("timesteps", "sigmas")]
    params = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    params += [p for p in extra if p.name not in sig.parameters]
    set_timesteps.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    scheduler.set_timesteps = set_timesteps
    return scheduler


def set_attention(pipe: Any, denoiser: Any, attention: str) -> None:
    """The suite's ``attention`` option. ``sdpa``/``eager`` swap UNet-style processors; transformers with their own
    (SD3's, Flux's: scaled dot-product attention already) keep them under ``sdpa`` and refuse ``eager``."""
    if attention == "xformers":
        pipe.enable_xformers_memory_efficient_attention()
    if attention not in ("sdpa", "eager") or not hasattr(denoiser, "set_attn_processor"):
        return
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    own = {type(p) for p in denoiser.attn_processors.values()}
    if own <= {AttnProcessor, AttnProcessor2_0}:
        denoiser.set_attn_processor(AttnProcessor2_0() if attention == "sdpa" else AttnProcessor())
    elif attention == "eager":
        names = ", ".join(sorted(t.__name__ for t in own))
        raise DiffusersError(
            f"diffusers option 'attention': 'eager' applies to UNet-style attention; {type(pipe).__name__} uses "
            f"{names} (scaled dot-product attention already): set attention to default or sdpa"
        )


def pipeline_mode(own_task: str | None, text: bool, class_conditional: bool) -> str:
    """What a pipeline's call makes, as the run records it: image-conditioned (``own_task``: a pipeline that is a
    task itself, e.g. a saved img2img, upscale or instruct-pix2pix pipeline), text-to-image, class-conditional or
    unconditional."""
    if own_task:
        return f"image-conditioned: {own_task}"
    if text:
        return "text-to-image"
    return "class-conditional" if class_conditional else "unconditional"
