"""Image-conditioned tasks in the diffusers adapter: img2img, inpaint, upscale, controlnet, edit.

Each task runs in diffusers' own task pipeline, so evalkit adds nothing to what the model's authors ship:

* a text-to-image pipeline (SD, SDXL, SD3, Flux) runs img2img and inpaint in its family's ``*Img2ImgPipeline`` and
  ``*InpaintPipeline``, and controlnet in its ``*ControlNetPipeline`` with the ControlNet the model option
  ``controlnet`` names (a folder or hub id of a ``ControlNetModel``, loaded offline where the hub is). They are built
  with the class's ``from_pipe``, which shares the loaded components (no second copy of the weights), so the
  denoiser's :class:`~evalkit.generate.diffusers_pipelines.ForwardCounter` counts their calls too;
* a pipeline that is one task itself runs that task only: ``StableDiffusionUpscalePipeline`` (upscale; the model
  option ``noise_level`` is its own knob, and it takes no ``strength``), ``StableDiffusionInstructPix2PixPipeline``
  (edit; model option ``image_guidance_scale``), and the task classes above saved as a model of their own (an
  inpainting checkpoint, a pipeline saved with its ControlNet).

Inputs go in as diffusers' image processors read tensors: images and control maps float in [0, 1] (B, 3, H, W),
which the processors map to [-1, 1] where the model wants it; masks float 0/1 (B, 1, H, W), 1 = generate. The output
is the source's size (img2img, inpaint, edit), the control map's (controlnet) or the upscaler's factor times the
low-resolution input's (upscale); the adapter's ``height``/``width`` options override it where the pipeline takes them.

Determinism is the text path's: one CPU generator per sample (:mod:`evalkit.generate.seeding`) passed as a list, so
every draw (the VAE encoding's sample, the noise added to the source, the scheduler's steps) is per sample and an
image does not depend on the batch size; the controlnet task's initial latents are drawn as the text path draws them,
so a ControlNet at scale 0 gives the text-to-image image. Model calls are counted on the denoiser (img2img at
strength s walks the last ≈ s·steps timesteps: diffusers' ``get_timesteps``), and the ControlNet's own calls are
counted and recorded in the batch's schedule.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from evalkit.errors import ConfigError
from evalkit.generate.adapter import GenerationRequest, check_finite, check_task
from evalkit.generate.diffusers_files import dtype_kwarg, hub_offline, local_file, read_json
from evalkit.generate.diffusers_pipelines import (
    DiffusersError,
    ForwardCounter,
    PipelineSpec,
    build_scheduler,
    guidance_kwargs,
    latent_shape,
    pipeline_latents,
)
from evalkit.generate.samplers import set_timesteps
from evalkit.generate.seeding import initial_noise

# a text-to-image pipeline → the diffusers classes that run each task on its components (as diffusers'
# AutoPipelineForImage2Image / ForInpainting / ForText2Image(controlnet=...) map them), for the families whose task
# pipelines take the same call: prompt, image, mask_image, strength, the control image, generator lists
TASK_PIPELINES: dict[str, dict[str, str]] = {
    "StableDiffusionPipeline": {
        "img2img": "StableDiffusionImg2ImgPipeline",
        "inpaint": "StableDiffusionInpaintPipeline",
        "controlnet": "StableDiffusionControlNetPipeline",
    },
    "StableDiffusionXLPipeline": {
        "img2img": "StableDiffusionXLImg2ImgPipeline",
        "inpaint": "StableDiffusionXLInpaintPipeline",
        "controlnet": "StableDiffusionXLControlNetPipeline",
    },
    "StableDiffusion3Pipeline": {
        "img2img": "StableDiffusion3Img2ImgPipeline",
        "inpaint": "StableDiffusion3InpaintPipeline",
        "controlnet": "StableDiffusion3ControlNetPipeline",
    },
    "FluxPipeline": {"img2img": "FluxImg2ImgPipeline", "inpaint": "FluxInpaintPipeline"},
}
# pipelines that are one task themselves (a model saved as one of them runs that task only)
OWN_TASK: dict[str, str] = {
    **{cls: task for tasks in TASK_PIPELINES.values() for task, cls in tasks.items()},
    "StableDiffusionUpscalePipeline": "upscale",
    "StableDiffusionInstructPix2PixPipeline": "edit",
    "StableDiffusionXLInstructPix2PixPipeline": "edit",
}
OPTIONS = ("controlnet", "noise_level", "image_guidance_scale")  # the adapter options of the tasks
# the request input the task pipeline reads as its ``image`` (the source, or the control map / low-res input)
IMAGE_INPUT = {
    "img2img": "images",
    "inpaint": "images",
    "edit": "images",
    "upscale": "control",
    "controlnet": "control",
}


def pipeline_tasks(pipeline: str | None, controlnet: bool = False) -> tuple[str, ...]:
    """The tasks a pipeline class runs: its family's task pipelines (controlnet only with a ControlNet given), or its
    own task; () where unknown (a pipeline not loaded and without config files here)."""
    if pipeline in OWN_TASK:
        return (OWN_TASK[pipeline],)
    family = TASK_PIPELINES.get(pipeline or "", {})
    return tuple(t for t in family if t != "controlnet" or controlnet)


def adapter_tasks(adapter: Any) -> tuple[str, ...]:
    """The tasks of the diffusers adapter's pipeline, loaded or declared by its config files (``Adapter.tasks``)."""
    spec = adapter.pipeline_spec()
    return pipeline_tasks(spec.name if spec is not None else None, bool(adapter.controlnet))


def check_options(controlnet: Any, noise_level: Any, image_guidance_scale: Any) -> None:
    """The task options' types, at construction (suite validation), not after loading the weights."""
    if controlnet is not None and (not isinstance(controlnet, str) or not controlnet):
        raise DiffusersError(
            f"diffusers option 'controlnet': expected a ControlNet folder or hub id; got {controlnet!r}"
        )
    if noise_level is not None and (
        isinstance(noise_level, bool) or not isinstance(noise_level, int) or noise_level < 0
    ):
        raise DiffusersError(f"diffusers option 'noise_level': expected an integer >= 0; got {noise_level!r}")
    bad = isinstance(image_guidance_scale, bool) or not isinstance(image_guidance_scale, (int, float))
    if image_guidance_scale is not None and (bad or image_guidance_scale < 0):
        raise DiffusersError(
            f"diffusers option 'image_guidance_scale': expected a number >= 0; got {image_guidance_scale!r}"
        )


def task_class(pipeline: str, task: str) -> str:
    """The diffusers class that runs ``task`` for a model whose own pipeline is ``pipeline``."""
    return pipeline if OWN_TASK.get(pipeline) == task else TASK_PIPELINES[pipeline][task]


def _diffusers_class(name: str) -> type:
    import diffusers

    cls = getattr(diffusers, name, None)
    if not isinstance(cls, type):
        raise DiffusersError(f"this diffusers ({diffusers.__version__}) has no {name}: upgrade diffusers")
    return cls


def walked_timesteps(cls: type, scheduler: Any, steps: int, strength: float) -> torch.Tensor:
    """The timesteps a task pipeline walks at ``strength`` on a scheduler whose timesteps are set: the class's own
    ``get_timesteps`` (SD: the last ⌊steps·strength⌋ steps, × the scheduler's order)."""
    return cls.get_timesteps(SimpleNamespace(scheduler=scheduler), steps, strength, None)[0]


def default_strength(cls: type) -> float | None:
    param = inspect.signature(cls.__call__).parameters.get("strength")
    return None if param is None else float(param.default)


def expected_task_calls(
    adapter: Any, sampler: str, steps: int, options: Mapping[str, Any], task: str, strength: float | None = None
) -> int | None:
    """Denoiser calls of one trajectory of ``task`` (``--dry-run``): the sampler's scheduler as the adapter builds
    it, cut as the task pipeline's ``get_timesteps`` cuts it at ``strength`` (None: the pipeline's default). None
    where the config files do not tell (no scheduler config, an unknown pipeline or a task it does not run)."""
    base, spec = adapter.scheduler_config(), adapter.pipeline_spec()
    if base is None or spec is None or task not in adapter_tasks(adapter):
        return None
    cls = _diffusers_class(task_class(spec.name, task))
    scheduler = build_scheduler(sampler, base, options, adapter.family)
    set_timesteps(scheduler, steps)
    s = strength if strength is not None else default_strength(cls)
    if s is None or not hasattr(cls, "get_timesteps"):
        return len(scheduler.timesteps)
    return len(walked_timesteps(cls, scheduler, steps, s))


def load_controlnet(path: str, dtype: torch.dtype, device: torch.device) -> Any:
    """The ControlNet of the model option ``controlnet``: its config's class (ControlNetModel, SD3ControlNetModel,
    ...), from a local folder or the hub cache (offline where the hub is)."""
    config = read_json(path, "config.json")
    if config is None:
        raise DiffusersError(
            f"diffusers option 'controlnet': {path!r} is no folder holding a ControlNet's config.json, nor a hub id "
            "in the Hugging Face cache; point it at a saved ControlNetModel"
        )
    cls = _diffusers_class(str(config.get("_class_name", "ControlNetModel")))
    where = str(local_file(path, "config.json").parent)
    try:
        model = cls.from_pretrained(where, **{dtype_kwarg(): dtype, "local_files_only": hub_offline()})
    except OSError as e:
        raise DiffusersError(f"diffusers option 'controlnet': {path!r} could not be loaded: {e}") from None
    return model.to(device)


def task_pipeline(adapter: Any, task: str) -> tuple[Any, ForwardCounter | None]:
    """The loaded pipeline's task pipeline (built once, on its components) and the ControlNet's counter, if any."""
    cache = adapter.task_pipes
    if task not in cache:
        pipe, name = adapter.pipeline, adapter.spec.name
        extra: dict[str, Any] = {}
        if task == "controlnet" and adapter.controlnet:
            extra["controlnet"] = load_controlnet(adapter.controlnet, adapter.dtype, adapter.device)
        if OWN_TASK.get(name) == task and not extra:
            task_pipe = pipe
        else:
            task_pipe = _diffusers_class(task_class(name, task)).from_pipe(pipe, **extra)
            task_pipe.set_progress_bar_config(disable=True)
        net = getattr(task_pipe, "controlnet", None) if task == "controlnet" else None
        cache[task] = (task_pipe, ForwardCounter(net) if net is not None else None)
    return cache[task]


def unit_images(x: torch.Tensor | None, field: str, task: str, channels: int = 3) -> torch.Tensor:
    """A request's uint8 (B, C, H, W) input as the float [0, 1] tensor diffusers' image processors take."""
    if x is None:
        raise ConfigError(f"task {task} needs conditions.{field}: the request carries none")
    x = torch.as_tensor(x)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != channels:
        raise ConfigError(f"task {task}: {field} must be uint8 (B, {channels}, H, W); got {x.dtype} {tuple(x.shape)}")
    if field == "masks":
        if int(x.max()) > 1:
            raise ConfigError(
                f"task {task}: masks must hold 0 (keep) and 1 (generate); got values up to {int(x.max())}"
            )
        return x.float()
    return x.float() / 255.0


def np_to_uint8(images: Any, indices: np.ndarray) -> torch.Tensor:
    """A pipeline's ``output_type="np"`` images (B, H, W, C) in [0, 1] → uint8 (B, 3, H, W), rounding; NaN/Inf is a
    GenerationError before the clamp (which would make it black)."""
    arr = torch.from_numpy(np.asarray(images, dtype=np.float32)).permute(0, 3, 1, 2)
    check_finite(arr, indices)
    img = (arr.clamp(0, 1) * 255).round().to(torch.uint8)
    return img.repeat(1, 3, 1, 1) if img.shape[1] == 1 else img


class TaskRun:
    """One request's task: the task pipeline, its fixed call keywords, and :meth:`batch` for a slice of it."""

    def __init__(self, adapter: Any, request: GenerationRequest):
        self.adapter, self.request, self.task = adapter, request, str(request.task)
        self.pipe, self.controlnet_counter = task_pipeline(adapter, self.task)
        self.cls = type(self.pipe)
        params = frozenset(inspect.signature(self.pipe.__call__).parameters)
        spec = PipelineSpec(self.cls.__name__, params, dict(adapter.denoiser.config))
        model = repr(adapter.path)
        self.fixed = guidance_kwargs(
            spec, request.guidance_method, request.guidance, request.guidance_options, adapter.negative_prompt, model
        )
        self.fixed.update(self._task_kwargs(params, model))
        self.params = params
        self.extra: dict[str, Any] = {}

    def _task_kwargs(self, params: frozenset[str], model: str) -> dict[str, Any]:
        r, a, where = self.request, self.adapter, f"task {self.task} ({self.cls.__name__} of model {model})"
        out: dict[str, Any] = {}
        if r.strength is not None:
            if "strength" not in params:
                knob = "; its noise level is the model option noise_level" if "noise_level" in params else ""
                raise ConfigError(f"{where} takes no strength (got {r.strength:g}): leave strength unset{knob}")
            if not 0 < r.strength <= 1:
                raise ConfigError(f"{where}: strength must be in (0, 1]; got {r.strength:g}")
            out["strength"] = float(r.strength)
        if r.controlnet_scale is not None:
            if "controlnet_conditioning_scale" not in params:
                raise ConfigError(f"{where} takes no controlnet_scale (got {r.controlnet_scale:g})")
            out["controlnet_conditioning_scale"] = float(r.controlnet_scale)
        for option in ("noise_level", "image_guidance_scale"):
            value = getattr(a, option)
            if value is not None:
                if option not in params:
                    raise ConfigError(f"diffusers option {option!r} does not apply to {where}")
                out[option] = value
        if "use_resolution_binning" in params:
            out["use_resolution_binning"] = False
        return out

    def _size(self, image: torch.Tensor) -> dict[str, int]:
        if "height" not in self.params:
            return {}
        a = self.adapter
        return {"height": int(a.height or image.shape[-2]), "width": int(a.width or image.shape[-1])}

    def batch(self, sl: slice, gens: list[torch.Generator], scheduler: Any) -> torch.Tensor:
        """The uint8 images of samples ``indices[sl]``, generated by the task pipeline with ``scheduler``."""
        r, a, pipe, task = self.request, self.adapter, self.pipe, self.task
        pipe.scheduler = scheduler
        prompts = list(r.prompts[sl])
        field = IMAGE_INPUT[task]
        image = unit_images(getattr(r, field)[sl] if getattr(r, field) is not None else None, field, task)
        kw: dict[str, Any] = {**self.fixed, "prompt": prompts, "num_inference_steps": r.steps, "generator": gens}
        kw.update(output_type="np", **self._size(image))
        kw["control_image" if "control_image" in self.params else "image"] = image
        if "negative_prompt" in kw:
            kw["negative_prompt"] = [kw["negative_prompt"]] * len(prompts)
        if task == "inpaint":
            kw["mask_image"] = unit_images(r.masks[sl] if r.masks is not None else None, "masks", task, channels=1)
        if task == "controlnet":  # the initial latents as the text path draws them
            h, w = kw.get("height", image.shape[-2]), kw.get("width", image.shape[-1])
            noise = initial_noise(gens, latent_shape(pipe, a.denoiser, h, w)).to(a.device, a.dtype)
            kw["latents"] = pipeline_latents(pipe, noise)
        cn0 = self.controlnet_counter.calls if self.controlnet_counter else 0
        out = pipe(**kw).images
        self.extra = {"task": self.task}
        if "strength" in self.params and hasattr(self.cls, "get_timesteps"):
            strength = kw.get("strength", default_strength(self.cls))
            walked = walked_timesteps(self.cls, scheduler, r.steps, strength)
            self.extra.update(strength=strength, first_timestep_index=len(scheduler.timesteps) - len(walked))
        if self.controlnet_counter is not None:
            self.extra["controlnet_calls"] = self.controlnet_counter.calls - cn0
        return np_to_uint8(out, r.indices[sl])


def task_run(adapter: Any, request: GenerationRequest) -> TaskRun | None:
    """The request's task run on the loaded pipeline, or None for text/class-to-image; refuses a task the model does
    not run (naming those it does) and a pipeline that is one task asked for none."""
    check_task(adapter, request, repr(adapter.path))
    own = OWN_TASK.get(adapter.spec.name)
    if request.task is None:
        if own is not None:
            raise ConfigError(
                f"model {adapter.path!r} is a {adapter.spec.name}: it runs task {own} only; set the suite's task"
            )
        return None
    if request.prompts is None:
        raise ConfigError(f"task {request.task} on {adapter.spec.name}: set conditions.prompts (the text it follows)")
    return TaskRun(adapter, request)
