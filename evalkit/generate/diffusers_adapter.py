"""Any diffusers ``DiffusionPipeline`` as an evalkit model: text-to-image, class-conditional, unconditional.

Options (suite ``models[].options``): ``path`` (a local folder holding ``model_index.json``, or a hub
id that is in the Hugging Face cache / reachable online), ``dtype`` (fp32 | fp16 | bf16),
``negative_prompt``, ``height``/``width``, ``compile`` (torch.compile the denoiser), ``attention``
(default | sdpa | eager | xformers), ``safety_checker`` (off by default: a checker that blanks images
would distort every metric), ``null_class`` (class-conditional UNets), ``variant``, ``revision``.

Why it is built this way:

* The pipeline is loaded lazily, on the first generation: ``evalkit run --dry-run`` then needs only
  the scheduler config (to count timesteps) and works, with a note, when the weights are absent.
* Samplers come from evalkit's registry, built on the pipeline's own scheduler config (its training
  noise schedule), reading the model output as its family (:func:`scheduler_family`) says; a sampler that does
  not apply to it is refused; ``native`` is the pipeline's own scheduler, its config unchanged.
* Determinism: one CPU generator per sample, seeded by :mod:`evalkit.generate.seeding`, and the initial latents
  drawn from them and passed in, so sample i depends on (seed, i) only, never on the batch size.
* NFE is *counted* on the wrapped ``forward``: ``nfe`` = images carried / batch (= calls × 2 under CFG).
* Text-to-image pipelines (those whose ``__call__`` takes ``prompt`` and ``latents``) run their own
  loop. Class-conditional (DiT-style ``class_labels``) and unconditional pipelines run evalkit's shared
  loop (:func:`evalkit.generate.denoise.sample`): their diffusers loops skip ``init_noise_sigma`` or
  the per-sample generators, which breaks Euler-type and stochastic samplers.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.errors import ConfigError
from evalkit.generate.adapter import Adapter, GeneratedBatch, GenerationRequest, batched, check_finite
from evalkit.generate.denoise import sample, to_uint8
from evalkit.generate.samplers import (
    check_family,
    get_sampler,
    make_scheduler,
    model_calls_per_sample,
    schedule_info,
)
from evalkit.generate.seeding import initial_noise, sample_generators, sample_seed

DTYPES = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}
ATTENTION = ("default", "sdpa", "eager", "xformers")


class DiffusersError(ConfigError):
    """A pipeline that cannot be loaded or used as asked; the message says what to do instead."""


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


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def _local_file(path: str, relative: str, revision: str | None = None) -> Path | None:
    """``relative`` inside a local pipeline folder, or inside the hub cache's copy of hub id ``path``."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        f = folder / relative
        return f if f.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(path, relative, revision=revision)
    except Exception:
        return None
    return Path(hit) if isinstance(hit, str) else None


def _dtype_kwarg() -> str:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (and warns on the old name); older releases want the old."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"


_PREDICTION_FAMILIES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0", "flow_prediction": "flow"}


def scheduler_family(config: dict[str, Any]) -> str | None:
    """A pipeline's model family from its scheduler config: FlowMatch* → flow, EDM* → edm, else by prediction_type."""
    cls = str(config.get("_class_name", ""))
    if cls.startswith(("FlowMatch", "EDM")):
        return "flow" if cls.startswith("FlowMatch") else "edm"
    return _PREDICTION_FAMILIES.get(config.get("prediction_type", "epsilon"))


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
    ):
        if not path or not isinstance(path, str):
            raise DiffusersError(
                "diffusers adapter: set options.path to a pipeline folder (with model_index.json) "
                "or a Hugging Face hub id"
            )
        if dtype not in DTYPES:
            raise DiffusersError(f"diffusers option 'dtype': expected one of fp32, fp16, bf16; got {dtype!r}")
        if attention not in ATTENTION:
            raise DiffusersError(
                f"diffusers option 'attention': expected one of {', '.join(ATTENTION)}; got {attention!r}"
            )
        self.path, self.device, self.dtype_name, self.dtype = path, torch.device(device), dtype, DTYPES[dtype]
        self.negative_prompt, self.height, self.width = negative_prompt, height, width
        self.compile, self.attention, self.safety_checker = bool(compile), attention, bool(safety_checker)
        self.null_class, self.variant, self.revision = null_class, variant, revision
        self.pipeline: Any = None
        self.denoiser: Any = None
        self.counter: ForwardCounter | None = None
        self._base: dict[str, Any] | None = None  # the pipeline's own scheduler config (training schedule)

    # -- planning without weights ----------------------------------------------------------------
    def scheduler_config(self) -> dict[str, Any] | None:
        """The pipeline's scheduler config: from the loaded pipeline, else read from disk/cache (no weights)."""
        if self._base is None:
            f = _local_file(self.path, "scheduler/scheduler_config.json", self.revision)
            if f is not None:
                self._base = json.loads(f.read_text())
        return self._base

    def dry_run_note(self) -> str | None:
        """Why ``expected_model_calls`` is unknown (shown by ``--dry-run``), or None."""
        if self.scheduler_config() is not None:
            return None
        return (
            f"model calls unknown: the weights of {self.path!r} are not here (no local folder, not in the "
            "Hugging Face cache); download them or point options.path at a pipeline folder"
        )

    @property
    def family(self) -> str | None:  # type: ignore[override]
        base = self.scheduler_config()
        return None if base is None else scheduler_family(base)

    def check_sampler(self, sampler: str) -> None:
        try:
            check_family(sampler, self.family, repr(self.path))
        except ConfigError as e:
            raise DiffusersError(str(e)) from None

    def expected_model_calls(self, sampler: str, steps: int, options: dict[str, Any]) -> int | None:
        base = self.scheduler_config()
        if base is None:
            return None
        self.check_sampler(sampler)
        return model_calls_per_sample(sampler, steps, base, options, family=self.family)

    # -- loading ---------------------------------------------------------------------------------
    def load(self) -> Any:
        """Load the pipeline once (lazily); errors name the folder or hub id and what to do."""
        if self.pipeline is not None:
            return self.pipeline
        from diffusers import DiffusionPipeline

        folder = Path(self.path).expanduser()
        offline = _hub_offline()
        if not folder.is_dir() and offline and _local_file(self.path, "model_index.json", self.revision) is None:
            raise DiffusersError(
                f"diffusers model {self.path!r}: no such local folder, and as a hub id it is not in the Hugging "
                "Face cache while the hub is offline (HF_HUB_OFFLINE=1). Download it where there is internet "
                f"(`hf download {self.path}`) or set options.path to a local folder holding model_index.json"
            )
        kwargs: dict[str, Any] = {_dtype_kwarg(): self.dtype, "local_files_only": offline}
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
        self._set_attention(pipe)
        if self.compile:
            self.denoiser.forward = torch.compile(self.denoiser.forward)
        self.counter = ForwardCounter(self.denoiser)  # outermost, so compiled calls are counted too
        params = inspect.signature(pipe.__call__).parameters
        self.text = "prompt" in params and "latents" in params
        self.accepts_negative = "negative_prompt" in params
        cfg = self.denoiser.config
        self.class_null = self.null_class
        if self.class_null is None:
            self.class_null = cfg.get("num_embeds_ada_norm") if "class_labels" in params else None
        self.class_conditional = not self.text and (self.class_null is not None or bool(cfg.get("num_class_embeds")))
        self.pipeline = pipe
        return pipe

    def _set_attention(self, pipe: Any) -> None:
        if self.attention == "xformers":
            pipe.enable_xformers_memory_efficient_attention()
        elif self.attention in ("sdpa", "eager"):
            from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

            if hasattr(self.denoiser, "set_attn_processor"):
                self.denoiser.set_attn_processor(AttnProcessor2_0() if self.attention == "sdpa" else AttnProcessor())

    def _latent_shape(self) -> tuple[int, int, int]:
        cfg, pipe = self.denoiser.config, self.pipeline
        size = cfg.sample_size if isinstance(cfg.sample_size, int) else cfg.sample_size[0]
        scale = getattr(pipe, "vae_scale_factor", 1) if getattr(pipe, "vae", None) is not None else 1
        h, w = (self.height or size * scale), (self.width or size * scale)
        return int(cfg.in_channels), int(h) // scale, int(w) // scale

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
        }
        folder = Path(self.path).expanduser()
        cfg_file = _local_file(self.path, "model_index.json", self.revision)
        if cfg_file is not None:
            root = folder if folder.is_dir() else cfg_file.parent
            if not folder.is_dir():
                out["revision"] = root.name  # the hub cache's snapshot folder is the commit hash
            configs = sorted(root.rglob("*.json"))
            h = hashlib.sha256()
            for f in configs:
                h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
            out["config_sha256"] = h.hexdigest()
        if self.pipeline is not None:
            c, h_, w = self._latent_shape()
            out.update(
                pipeline=type(self.pipeline).__name__,
                base_scheduler=self._base["_class_name"],
                mode="text-to-image"
                if self.text
                else "class-conditional"
                if self.class_conditional
                else "unconditional",
                latent_shape=[c, h_, w],
                parameters=sum(p.numel() for p in self.denoiser.parameters()),
            )
        return out

    # -- generation ------------------------------------------------------------------------------
    def _scheduler(self, request: GenerationRequest, first_index: int) -> Any:
        options = dict(request.sampler_options)
        if not get_sampler(request.sampler).batch_invariant:
            options.setdefault("noise_sampler_seed", sample_seed(request.seed, first_index) % (2**31))
        return make_scheduler(request.sampler, self._base, options, family=self.family)

    def generate(self, request: GenerationRequest) -> Iterator[GeneratedBatch]:
        self.check_sampler(request.sampler)  # before loading: fail in seconds, not after loading gigabytes
        if request.guidance_method != "cfg":  # the pipelines' own loops guide with cfg (issue 17: methods there)
            raise DiffusersError(f"guidance_method {request.guidance_method!r}: the diffusers adapter supports cfg")
        self.load()
        self.check_sampler(request.sampler)  # again, on the loaded scheduler's config (a hub id may have had none)
        run = self._text_batch if self.text else self._loop_batch
        if self.text:
            if request.prompts is None:
                raise DiffusersError(f"{type(self.pipeline).__name__} is text-to-image: set conditions.prompts")
            if request.guidance < 1:
                raise DiffusersError(
                    f"{type(self.pipeline).__name__} applies guidance only above 1 (1 = off); "
                    f"got guidance {request.guidance:g}"
                )
        elif self.class_conditional and request.labels is None:
            raise DiffusersError(f"{type(self.pipeline).__name__} is class-conditional: set conditions.classes")
        elif not self.class_conditional and request.guidance != 1.0:
            raise DiffusersError(f"{type(self.pipeline).__name__} is unconditional: guidance must be 1")
        for sl in batched(request.indices, request.batch_size):
            idx = request.indices[sl]
            gens = sample_generators(request.seed, idx)
            noise = initial_noise(gens, self._latent_shape()).to(self.device, self.dtype)
            calls0, images0 = self.counter.snapshot()
            scheduler = self._scheduler(request, int(idx[0]))
            images = run(request, sl, gens, noise, scheduler)
            calls, carried = self.counter.calls - calls0, self.counter.images - images0
            schedule = schedule_info(request.sampler, scheduler, request.sampler_options)
            yield GeneratedBatch(images, np.asarray(idx), calls, round(carried / len(idx)) if calls else 0, schedule)

    def _text_batch(
        self, request: GenerationRequest, sl: slice, gens: list[torch.Generator], noise: torch.Tensor, scheduler: Any
    ) -> torch.Tensor:
        pipe = self.pipeline
        pipe.scheduler = scheduler
        prompts = list(request.prompts[sl])
        kwargs: dict[str, Any] = {
            "prompt": prompts,
            "num_inference_steps": request.steps,
            "guidance_scale": request.guidance,
            "generator": gens,
            "latents": noise,
            "output_type": "np",
            "height": noise.shape[-2] * self._scale(),
            "width": noise.shape[-1] * self._scale(),
        }
        if self.negative_prompt is not None and self.accepts_negative:
            kwargs["negative_prompt"] = [self.negative_prompt] * len(prompts)
        out = pipe(**kwargs).images
        arr = torch.from_numpy(np.asarray(out, dtype=np.float32)).permute(0, 3, 1, 2)
        check_finite(arr, request.indices[sl])  # before the clamp, which would make NaN black
        img = (arr.clamp(0, 1) * 255).round().to(torch.uint8)
        return img.repeat(1, 3, 1, 1) if img.shape[1] == 1 else img

    def _scale(self) -> int:
        pipe = self.pipeline
        return getattr(pipe, "vae_scale_factor", 1) if getattr(pipe, "vae", None) is not None else 1

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
        if self.class_conditional:
            labels = torch.as_tensor(request.labels[sl], dtype=torch.long, device=self.device)
            if request.guidance != 1.0:
                if self.class_null is None:
                    raise DiffusersError("classifier-free guidance needs the null class: set options.null_class")
                uncond = torch.full_like(labels, int(self.class_null))
        x = sample(
            eps, scheduler, noise, request.steps, cond=labels, uncond=uncond, guidance=request.guidance, generators=gens
        )
        vae = getattr(self.pipeline, "vae", None)
        if vae is not None:
            x = vae.decode(x.to(vae.dtype) / vae.config.scaling_factor).sample
        return to_uint8(x.float(), request.indices[sl]).cpu()

    def close(self) -> None:
        self.pipeline = self.denoiser = self.counter = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
