"""Any diffusers ``DiffusionPipeline`` as an evalkit model: text-to-image, class-conditional, unconditional.

Options (suite ``models[].options``): ``path`` (a local folder holding ``model_index.json``, or a hub id that
is in the Hugging Face cache / reachable online), ``dtype`` (fp32 | fp16 | bf16), ``negative_prompt``,
``height``/``width``, ``compile`` (torch.compile the denoiser), ``attention`` (default | sdpa | eager | xformers),
``safety_checker`` (off by default: a checker that blanks images would distort every metric), ``null_class``
(class-conditional models), ``variant``, ``revision``; for image-conditioned tasks ``controlnet`` (a ControlNet's
folder), ``noise_level`` (the upscaler's), ``image_guidance_scale`` (instruct-pix2pix's): :mod:`.diffusers_tasks`.

Why it is built this way:

* The pipeline is loaded lazily, on the first generation: ``evalkit run --dry-run`` then needs only
  the scheduler config (to count timesteps) and works, with a note, when the weights are absent.
* Samplers come from evalkit's registry, built on the pipeline's own scheduler config (its training noise
  schedule, and for flow matching its shift and resolution-dependent shift), reading the model output as its
  family (:func:`scheduler_family`) says; a sampler that does not apply to the model, or that the pipeline's
  loop cannot run (:mod:`evalkit.generate.diffusers_pipelines`), is refused; ``native`` is the pipeline's own.
* Determinism: one CPU generator per sample, seeded by :mod:`evalkit.generate.seeding`, the initial latents drawn
  from them and passed in (packed for Flux), and every scheduler step's noise drawn from them too, so sample i
  depends on (seed, i) only, never on the batch size.
* NFE is *counted* on the wrapped ``forward``: ``nfe`` = images carried / batch (= calls × 2 under batched CFG).
* Text-to-image pipelines (those whose ``__call__`` takes ``prompt`` and ``latents``: SD, SDXL, SD3, Flux,
  PixArt, Sana, LCM, ...) run their own loop. Class-conditional (DiT-style ``class_labels``) and unconditional
  pipelines run evalkit's shared loop (:func:`evalkit.generate.denoise.sample`), with every guidance method:
  their diffusers loops skip ``init_noise_sigma`` or the per-sample generators.
* Guidance (``guidance_method``) in a pipeline's own loop: ``cfg`` (and ``cfg_rescale`` where the pipeline takes
  ``guidance_rescale``) and ``none`` (scale 1: one conditional call). A guidance-distilled model, whose denoiser
  takes the scale as an input (FLUX.1-dev's ``guidance_embeds``, a latent consistency model's
  ``time_cond_proj_dim``), takes ``distilled`` (the scale as the embedding, one call per step) or ``none``;
  ``cfg`` is refused there rather than mapped: such a model has no trained unconditional prediction, its pipeline
  runs no CFG, and a cell labelled cfg that costs one call per step would mislead. FluxPipeline's true CFG
  (``true_cfg_scale`` with a negative prompt, two calls per step) is ``cfg`` on Flux models without the guidance
  embedding (FLUX.1-schnell-like); ``distilled`` on a model without an embedding is refused. Other methods
  (``interval``, ``apg``) need evalkit's loop, which text-to-image pipelines do not run: refused.
* PixArt and Sana generate exactly ``height`` × ``width`` (``use_resolution_binning`` off: binning would resize).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.errors import ConfigError
from evalkit.generate import diffusers_tasks as dtasks
from evalkit.generate.adapter import Adapter, GeneratedBatch, GenerationRequest, batched, check_task
from evalkit.generate.denoise import sample, to_uint8
from evalkit.generate.diffusers_files import config_identity, dtype_kwarg, hub_offline, local_file, read_json
from evalkit.generate.diffusers_pipelines import (
    DiffusersError,
    ForwardCounter,
    PipelineSpec,
    build_scheduler,
    check_attention,
    check_pipeline_sampler,
    count_model_calls,
    fitting_samplers,
    guard_scheduler,
    guidance_kwargs,
    latent_shape,
    pipeline_latents,
    pipeline_mode,
    scheduler_family,
    set_attention,
    torch_dtype,
    vae_scale,
)
from evalkit.generate.guidance import STANDARD_METHODS, check_supported
from evalkit.generate.samplers import check_family, get_sampler, schedule_info
from evalkit.generate.seeding import initial_noise, sample_generators, sample_seed

__all__ = ["DiffusersAdapter", "DiffusersError", "ForwardCounter", "scheduler_family"]


class DiffusersAdapter(Adapter):
    """A diffusers pipeline folder or hub id; see the module docstring for the options."""

    name = "diffusers"

    def __init__(
        self,
        path: str | None = None,
        device: str = "cpu",
        dtype: str = "fp32",
        negative_prompt: str | None = None,
        height: int | None = None,
        width: int | None = None,
        compile: bool = False,
        attention: str = "default",
        safety_checker: bool = False,
        null_class: int | None = None,
        variant: str | None = None,
        revision: str | None = None,
        controlnet: str | None = None,
        noise_level: int | None = None,
        image_guidance_scale: float | None = None,
    ):
        if not path or not isinstance(path, str):
            raise DiffusersError(
                "diffusers adapter: set options.path to a pipeline folder (with model_index.json) "
                "or a Hugging Face hub id"
            )
        self.path, self.device, self.dtype_name, self.dtype = path, torch.device(device), dtype, torch_dtype(dtype)
        check_attention(attention)
        dtasks.check_options(controlnet, noise_level, image_guidance_scale)
        self.negative_prompt, self.height, self.width = negative_prompt, height, width
        self.compile, self.attention, self.safety_checker = bool(compile), attention, bool(safety_checker)
        self.null_class, self.variant, self.revision = null_class, variant, revision
        self.controlnet, self.noise_level, self.image_guidance_scale = controlnet, noise_level, image_guidance_scale
        self.task_pipes: dict[str, Any] = {}  # task → (its pipeline on the loaded components, ControlNet counter)
        self.pipeline: Any = None
        self.denoiser: Any = None
        self.counter: ForwardCounter | None = None
        self.spec: PipelineSpec | None = None  # class, call parameters, denoiser config: from files, then loaded
        self._base: dict[str, Any] | None = None  # the pipeline's own scheduler config (training schedule)

    # -- planning without weights ----------------------------------------------------------------
    def _json(self, relative: str) -> dict[str, Any] | None:
        return read_json(self.path, relative, self.revision)

    def scheduler_config(self) -> dict[str, Any] | None:
        """The pipeline's scheduler config: from the loaded pipeline, else read from disk/cache (no weights)."""
        if self._base is None:
            self._base = self._json("scheduler/scheduler_config.json")
        return self._base

    def pipeline_spec(self) -> PipelineSpec | None:
        """The pipeline's class and denoiser config: from the loaded pipeline, else from its config files."""
        if self.spec is None:
            index = self._json("model_index.json") or {}
            denoiser = self._json("transformer/config.json") or self._json("unet/config.json")
            if "_class_name" in index and denoiser is not None:
                self.spec = PipelineSpec.of(str(index["_class_name"]), denoiser)
        return self.spec

    def dry_run_note(self) -> str | None:
        """Why ``expected_model_calls`` is unknown (shown by ``--dry-run``), or None."""
        if self.scheduler_config() is not None:
            return None
        return (
            f"model calls unknown: the weights of {self.path!r} are not here (no local folder, not in the "
            "Hugging Face cache); download them or point options.path at a pipeline folder"
        )

    @property
    def tasks(self) -> tuple[str, ...]:  # type: ignore[override]
        return dtasks.adapter_tasks(self)

    @property
    def family(self) -> str | None:  # type: ignore[override]
        base = self.scheduler_config()
        return None if base is None else scheduler_family(base)

    def check_sampler(self, sampler: str) -> None:
        """Refuse a sampler of another model family, or one the pipeline's own loop cannot run."""
        try:
            check_family(sampler, self.family, repr(self.path))
        except ConfigError as e:
            raise DiffusersError(str(e)) from None
        base, spec = self.scheduler_config(), self.pipeline_spec()
        if base is not None and self.family is not None and spec is not None:
            check_pipeline_sampler(sampler, base, self.family, spec.name, repr(self.path))

    def expected_model_calls(
        self, sampler: str, steps: int, options: dict[str, Any], task: str | None = None, strength: float | None = None
    ) -> int | None:
        """Model calls of one trajectory; with ``task`` (and its ``strength``) those of the task's pipeline."""
        base = self.scheduler_config()
        if base is None:
            return None
        self.check_sampler(sampler)
        if task is not None:
            return dtasks.expected_task_calls(self, sampler, steps, options, task, strength)
        return count_model_calls(sampler, steps, base, options, self.family)

    # -- loading ---------------------------------------------------------------------------------
    def load(self) -> Any:
        """Load the pipeline once (lazily); errors name the folder or hub id and what to do."""
        if self.pipeline is not None:
            return self.pipeline
        from diffusers import DiffusionPipeline

        folder = Path(self.path).expanduser()
        offline = hub_offline()
        if not folder.is_dir() and offline and local_file(self.path, "model_index.json", self.revision) is None:
            raise DiffusersError(
                f"diffusers model {self.path!r}: no such local folder, and as a hub id it is not in the Hugging "
                "Face cache while the hub is offline (HF_HUB_OFFLINE=1). Download it where there is internet "
                f"(`hf download {self.path}`) or set options.path to a local folder holding model_index.json"
            )
        kwargs: dict[str, Any] = {dtype_kwarg(): self.dtype, "local_files_only": offline}
        if self.variant:
            kwargs["variant"] = self.variant
        if self.revision:
            kwargs["revision"] = self.revision
        try:
            pipe = DiffusionPipeline.from_pretrained(str(folder) if folder.is_dir() else self.path, **kwargs)
        except OSError as e:
            raise DiffusersError(f"diffusers model {self.path!r} could not be loaded: {e}") from None
        if not self.safety_checker and getattr(pipe, "safety_checker", None) is not None:
            pipe.safety_checker = None
        pipe.set_progress_bar_config(disable=True)
        pipe.to(self.device)
        # as diffusers' own ``Scheduler.from_config(pipe.scheduler.config)``: keys the file left out stay
        # at each sampler's own defaults (e.g. Euler's timestep spacing), not at the base class's
        defaulted = set(pipe.scheduler.config.get("_use_default_values", []))
        self._base = {k: v for k, v in pipe.scheduler.config.items() if k not in defaulted}
        self._base["_class_name"] = type(pipe.scheduler).__name__
        self.denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        if self.denoiser is None:
            raise DiffusersError(f"pipeline {type(pipe).__name__} has neither a 'unet' nor a 'transformer'")
        # diffusers 0.42 leaves SD3's transformer in fp32 when loaded without accelerate: cast it as asked
        if self.denoiser.dtype != self.dtype and getattr(self.denoiser, "_keep_in_fp32_modules", None) is None:
            self.denoiser.to(self.dtype)
        set_attention(pipe, self.denoiser, self.attention)
        if self.compile:
            self.denoiser.forward = torch.compile(self.denoiser.forward)
        self.counter = ForwardCounter(self.denoiser)  # outermost, so compiled calls are counted too
        params = inspect.signature(pipe.__call__).parameters
        self.spec = PipelineSpec(type(pipe).__name__, frozenset(params), dict(self.denoiser.config))
        self.text = "prompt" in params and "latents" in params
        cfg = self.denoiser.config
        self.class_null = self.null_class
        if self.class_null is None:
            self.class_null = cfg.get("num_embeds_ada_norm") if "class_labels" in params else None
        self.class_conditional = not self.text and (self.class_null is not None or bool(cfg.get("num_class_embeds")))
        self.pipeline = pipe
        return pipe

    def _latent_shape(self) -> tuple[int, int, int]:
        return latent_shape(self.pipeline, self.denoiser, self.height, self.width)

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "adapter": "diffusers",
            "path": self.path,
            "dtype": self.dtype_name,
            "device": str(self.device),
            "compile": self.compile,
            "attention": self.attention,
            "negative_prompt": self.negative_prompt,
            "safety_checker": self.safety_checker,
            "tasks": list(self.tasks),
            **{k: getattr(self, k) for k in dtasks.OPTIONS if getattr(self, k) is not None},
        }
        out.update(config_identity(self.path, self.revision))
        if self.pipeline is not None:
            c, h_, w = self._latent_shape()
            out.update(
                pipeline=type(self.pipeline).__name__,
                base_scheduler=self._base["_class_name"],
                mode=pipeline_mode(dtasks.OWN_TASK.get(self.spec.name), self.text, self.class_conditional),
                latent_shape=[c, h_, w],
                guidance_embedding=self.spec.embedding,
                parameters=sum(p.numel() for p in self.denoiser.parameters()),
            )
        return out

    # -- generation ------------------------------------------------------------------------------
    def _scheduler(self, request: GenerationRequest, first_index: int, gens: list[torch.Generator]) -> Any:
        options = dict(request.sampler_options)
        if not get_sampler(request.sampler).batch_invariant:
            options.setdefault("noise_sampler_seed", sample_seed(request.seed, first_index) % (2**31))
        scheduler = build_scheduler(request.sampler, self._base, options, self.family)

        def refuse(args: list[str]) -> DiffusersError:
            fit = fitting_samplers(self._base, self.family, self.spec.name, args) if self.family else "native"
            return DiffusersError(
                f"sampler {request.sampler} ({type(scheduler).__name__}) cannot run in {self.spec.name}: the "
                f"pipeline sets the schedule with set_timesteps({', '.join(args)}=...), which it does not take; "
                f"samplers that do: {fit}"
            )

        return guard_scheduler(scheduler, gens, refuse)

    def _check_guidance(self, request: GenerationRequest, spec: PipelineSpec | None) -> dict[str, Any]:
        """The pipeline keywords for the request's guidance (text-to-image), or the loop's checks; refusals are
        raised before loading where the config files tell enough."""
        method, model = request.guidance_method, repr(self.path)
        text = self.text if self.pipeline is not None else spec is not None and {"prompt", "latents"} <= spec.params
        if spec is not None and text:
            return guidance_kwargs(
                spec, method, request.guidance, request.guidance_options, self.negative_prompt, model
            )
        name = spec.name if spec is not None else "pipeline"
        try:  # evalkit's own loop: every method but distilled (no guidance embedding there)
            check_supported(method, STANDARD_METHODS, f"{model} ({name})")
        except ConfigError as e:
            raise DiffusersError(str(e)) from None
        return {}

    def generate(self, request: GenerationRequest) -> Iterator[GeneratedBatch]:
        self.check_sampler(request.sampler)  # before loading: fail in seconds, not after loading gigabytes
        if self.pipeline_spec() is not None:  # the config files tell the pipeline and its guidance embedding
            self._check_guidance(request, self.spec)
            check_task(self, request, repr(self.path))
        self.load()
        self.check_sampler(request.sampler)  # again, on the loaded scheduler's config (a hub id may have had none)
        guidance = self._check_guidance(request, self.spec)
        run = dtasks.task_run(self, request)  # None: text/class-to-image; else the task's own pipeline
        if run is None and self.text and request.prompts is None:
            raise DiffusersError(f"{self.spec.name} is text-to-image: set conditions.prompts")
        if run is None and not self.text and self.class_conditional and request.labels is None:
            raise DiffusersError(f"{self.spec.name} is class-conditional: set conditions.classes")
        if run is None and not self.text and not self.class_conditional and request.guidance != 1.0:
            raise DiffusersError(f"{self.spec.name} is unconditional: guidance must be 1")
        for sl in batched(request.indices, request.batch_size):
            idx = request.indices[sl]
            gens = sample_generators(request.seed, idx)
            calls0, images0 = self.counter.snapshot()
            scheduler = self._scheduler(request, int(idx[0]), gens)
            noise = None if run else initial_noise(gens, self._latent_shape()).to(self.device, self.dtype)
            if run is not None:
                images = run.batch(sl, gens, scheduler)
            elif self.text:
                images = self._text_batch(request, sl, gens, noise, scheduler, guidance)
            else:
                images = self._loop_batch(request, sl, gens, noise, scheduler)
            calls, carried = self.counter.calls - calls0, self.counter.images - images0
            schedule = schedule_info(request.sampler, scheduler, request.sampler_options)
            mu = getattr(scheduler, "evalkit_pipeline_mu", None)  # the shift the pipeline's own loop computed
            if mu is not None and "dynamic_shift" not in schedule:
                schedule["dynamic_shift"] = {"mu": mu, "computed_by": self.spec.name}
            schedule.update(run.extra if run else {})  # task, strength, ControlNet calls
            yield GeneratedBatch(images, np.asarray(idx), calls, round(carried / len(idx)) if calls else 0, schedule)

    def _text_batch(
        self,
        request: GenerationRequest,
        sl: slice,
        gens: list[torch.Generator],
        noise: torch.Tensor,
        scheduler: Any,
        guidance: dict[str, Any],
    ) -> torch.Tensor:
        pipe = self.pipeline
        pipe.scheduler = scheduler
        prompts = list(request.prompts[sl])
        kwargs: dict[str, Any] = {
            "prompt": prompts,
            "num_inference_steps": request.steps,
            "generator": gens,
            "latents": pipeline_latents(pipe, noise),
            "output_type": "np",
            "height": noise.shape[-2] * vae_scale(pipe),
            "width": noise.shape[-1] * vae_scale(pipe),
            **guidance,
        }
        if "negative_prompt" in kwargs:
            kwargs["negative_prompt"] = [kwargs["negative_prompt"]] * len(prompts)
        if "use_resolution_binning" in self.spec.params:
            kwargs["use_resolution_binning"] = False  # exactly height × width, not the nearest trained aspect bin
        return dtasks.np_to_uint8(pipe(**kwargs).images, request.indices[sl])  # NaN refused before the clamp

    @torch.inference_mode()
    def _loop_batch(
        self, request: GenerationRequest, sl: slice, gens: list[torch.Generator], noise: torch.Tensor, scheduler: Any
    ) -> torch.Tensor:
        is_transformer = self.denoiser is getattr(self.pipeline, "transformer", None)

        def eps(x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
            tt = torch.as_tensor(t, device=x.device).reshape(-1).expand(x.shape[0])
            kw = {"class_labels": labels} if labels is not None else {}
            out = self.denoiser(x, timestep=tt, **kw).sample if is_transformer else self.denoiser(x, tt, **kw).sample
            return out[:, : x.shape[1]] if out.shape[1] == 2 * x.shape[1] else out  # drop a learned variance

        labels = uncond = None
        method = request.guidance_method
        if self.class_conditional:
            labels = torch.as_tensor(request.labels[sl], dtype=torch.long, device=self.device)
            if method != "none" and (request.guidance != 1.0 or method == "apg"):
                if self.class_null is None:
                    raise DiffusersError("classifier-free guidance needs the null class: set options.null_class")
                uncond = torch.full_like(labels, int(self.class_null))
        x = sample(
            eps,
            scheduler,
            noise,
            request.steps,
            cond=labels,
            uncond=uncond,
            guidance=request.guidance,
            generators=gens,
            guidance_method=method,
            guidance_options=request.guidance_options,
        )
        vae = getattr(self.pipeline, "vae", None)
        if vae is not None:
            x = vae.decode(x.to(vae.dtype) / vae.config.scaling_factor).sample
        return to_uint8(x.float(), request.indices[sl]).cpu()

    def close(self) -> None:
        self.pipeline = self.denoiser = self.counter = None
        self.task_pipes = {}
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
