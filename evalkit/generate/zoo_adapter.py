"""Adapters for the built-in offline models: the MNIST class-conditional UNets and a pure-noise floor."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from evalkit.errors import ConfigError
from evalkit.generate.adapter import Adapter, GeneratedBatch, GenerationRequest, batched, check_task
from evalkit.generate.denoise import CallCounter, sample, to_uint8
from evalkit.generate.guidance import STANDARD_METHODS, check_supported
from evalkit.generate.partial import sdedit, start_timesteps, task_inputs, task_strength
from evalkit.generate.planning import ZOO_DEFAULT_MODEL, ZOO_MODELS, ZOO_TASKS, check_strength, strength_start
from evalkit.generate.samplers import (
    check_family,
    get_sampler,
    make_scheduler,
    model_calls_per_sample,
    schedule_info,
)
from evalkit.generate.seeding import initial_noise, sample_generators, sample_seed


class ZooMnistAdapter(Adapter):
    """evalkit's own class-conditional MNIST diffusion models (``evalkit zoo train mnist``, ``... mnist-flow``).

    Options: ``model: mnist-unet | mnist-flow`` (an ε-prediction DDPM UNet, or the same network trained as a
    rectified flow: its samplers are the flow ones); ``weights: trained | untrained`` (untrained = same network at
    its random init, a sanity floor for metrics). Tasks (:mod:`evalkit.generate.partial`): img2img (SDEdit),
    inpaint (mask blend, unmasked pixels kept exactly), upscale (bicubic to 32 px, then SDEdit); gray: the source's
    channel 0 is read.
    """

    name = "zoo"
    tasks = ZOO_TASKS  # img2img, inpaint, upscale (evalkit.generate.partial); no controlnet, no edit
    native_scheduler = "DDPMScheduler"  # mnist-unet's, what it was trained with: sampler ``native``

    def __init__(self, weights: str = "trained", device: str = "cpu", model: str = ZOO_DEFAULT_MODEL):
        from evalkit import zoo

        if weights not in ("trained", "untrained"):
            raise ConfigError(f"zoo option 'weights': expected 'trained' or 'untrained'; got {weights!r}")
        if model not in ZOO_MODELS:
            raise ConfigError(f"zoo option 'model': expected one of {', '.join(ZOO_MODELS)}; got {model!r}")
        self.weights, self.model = weights, model
        self.family = ZOO_MODELS[model][0]  # what its output is (planning knows it without building the model)
        self.device = torch.device(device)
        self.unet, schedule = zoo.load_mnist_unet(trained=weights == "trained", model=model)
        # "_" keys are not scheduler options; the flow model's schedule names its own (FlowMatchEuler)
        self.schedule = {"_class_name": self.native_scheduler, **schedule}
        self.unet.to(self.device).eval()
        self.null_class = zoo.NULL_CLASS
        self._files = zoo.model_card()["models"][model]["files"] if weights == "trained" else None

    def info(self) -> dict[str, Any]:
        sha = {name: meta["sha256"] for name, meta in self._files.items()} if self._files else "random-init:seed0"
        return {
            "adapter": "zoo",
            "model": "mnist" if self.model == ZOO_DEFAULT_MODEL else self.model,
            "family": self.family,
            "weights": self.weights,
            "weights_sha256": sha,
            "parameters": sum(p.numel() for p in self.unet.parameters()),
            "resolution": 32,
        }

    def expected_model_calls(
        self, sampler: str, steps: int, options: dict[str, Any], task: str | None = None, strength: float | None = None
    ) -> int:
        """Model calls per trajectory; with ``strength`` (an img2img/inpaint/upscale cell's), those of the
        schedule's tail it walks (:func:`evalkit.generate.partial.start_timesteps`), read from the scheduler."""
        check_family(sampler, self.family, self.model)
        if strength is None:
            return model_calls_per_sample(sampler, steps, self.schedule, options, family=self.family)
        scheduler = make_scheduler(sampler, self.schedule, options, family=self.family)
        return len(start_timesteps(scheduler, steps, check_strength(strength), sampler=sampler))

    @torch.inference_mode()
    def _denoise(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, class_labels=labels).sample

    def _check(self, request: GenerationRequest) -> float | None:
        """Refuse what this model cannot run; the strength of a task request (None: plain sampling)."""
        if request.labels is None:
            raise ConfigError("the zoo MNIST model is class-conditional: set 'conditions: {classes: 10}' in the suite")
        check_family(request.sampler, self.family, self.model)
        check_supported(request.guidance_method, STANDARD_METHODS, self.model)  # no guidance embedding: no distilled
        check_task(self, request, self.model)
        return None if request.task is None else task_strength(request.task, request.strength)

    def generate(self, request: GenerationRequest) -> Iterator[GeneratedBatch]:
        """Class-conditional samples; for a task (:attr:`tasks`), started from the request's images
        (:mod:`evalkit.generate.partial`: SDEdit img2img, inpainting by mask blend, bicubic-then-SDEdit upscale)."""
        strength = self._check(request)
        for sl in batched(request.indices, request.batch_size):
            yield self._batch(request, sl, strength)

    def _batch(self, request: GenerationRequest, sl: slice, strength: float | None) -> GeneratedBatch:
        idx = request.indices[sl]
        gens = sample_generators(request.seed, idx)
        noise = initial_noise(gens, (1, 32, 32)).to(self.device)
        options = dict(request.sampler_options)
        if not get_sampler(request.sampler).batch_invariant:
            options.setdefault("noise_sampler_seed", sample_seed(request.seed, int(idx[0])) % (2**31))
        scheduler = make_scheduler(request.sampler, self.schedule, options, family=self.family)
        labels = torch.tensor(np.asarray(request.labels[sl]), dtype=torch.long, device=self.device)
        method = request.guidance_method
        cfg = method != "none" and (request.guidance != 1.0 or method == "apg")
        loop = {
            "cond": labels,
            "uncond": torch.full_like(labels, self.null_class) if cfg else None,
            "guidance": request.guidance,
            "generators": gens,
            "guidance_method": method,
            "guidance_options": request.guidance_options,
        }
        counter = CallCounter(self._denoise)
        with torch.inference_mode():
            if strength is None:
                x = sample(counter, scheduler, noise, request.steps, **loop)
            else:
                x0, mask = task_inputs(request, sl, 32, self.device)
                steps, name = request.steps, request.sampler
                x = sdedit(counter, scheduler, x0, noise, steps, strength, sampler=name, keep_mask=mask, **loop)
        info = schedule_info(request.sampler, scheduler, request.sampler_options)
        if strength is not None:  # the tail of ``timesteps`` walked starts at begin_index
            begin = strength_start(request.steps, strength) * int(getattr(scheduler, "order", 1))
            info.update(task=request.task, strength=strength, begin_index=begin)
        return GeneratedBatch(
            to_uint8(x, idx),
            idx,
            counter.calls,
            counter.images // len(idx),  # NFE per image, counted: interval guidance doubles only some calls
            schedule=info,
        )


class NoiseAdapter(Adapter):
    """Uniform random pixels from the per-sample generators: the worst-case floor for any metric."""

    name = "noise"

    def __init__(self, resolution: int = 32, grayscale: bool = True, device: str = "cpu"):
        self.resolution, self.grayscale = int(resolution), bool(grayscale)

    def info(self) -> dict[str, Any]:
        return {"adapter": "noise", "resolution": self.resolution, "grayscale": self.grayscale}

    def expected_model_calls(self, sampler: str, steps: int, options: dict[str, Any]) -> int:
        return 0

    def generate(self, request: GenerationRequest) -> Iterator[GeneratedBatch]:
        r, c = self.resolution, 1 if self.grayscale else 3
        for sl in batched(request.indices, request.batch_size):
            idx = request.indices[sl]
            imgs = torch.stack(
                [
                    torch.randint(0, 256, (c, r, r), generator=g, dtype=torch.uint8)
                    for g in sample_generators(request.seed, idx)
                ]
            )
            yield GeneratedBatch(imgs.repeat(1, 3 // c, 1, 1), np.asarray(idx), 0, 0)
