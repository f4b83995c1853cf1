"""An example evalkit adapter: bring your own denoiser and let evalkit run the grid.

evalkit calls an adapter with a :class:`~evalkit.generate.GenerationRequest` (sample indices, seed,
sampler name, steps, guidance, batch size, and a class label or prompt per sample) and expects
batches of images back, with the denoiser calls they cost. This one wraps evalkit's built-in MNIST
UNet in a hand-written loop, to show each part of the contract:

* **Determinism**: sample ``i`` must depend on ``(seed, i)`` only. Use one CPU generator per sample
  (:func:`evalkit.generate.seeding.sample_generators`) and draw the initial noise from them
  (:func:`evalkit.generate.seeding.initial_noise`); then images do not depend on batch size, device count or
  the point where a run resumed.
* **Samplers**: build the sampler the suite names on *your* model's training noise schedule with
  :func:`evalkit.generate.samplers.make_scheduler`.
* **NFE**: count the denoiser's forward calls (:class:`evalkit.generate.denoise.CallCounter`); report
  ``model_calls`` per trajectory and ``nfe`` (= calls × 2 when classifier-free guidance doubles the batch).
* **Images**: uint8 ``(B, 3, H, W)`` or float in ``[0, 1]``; never compute metrics here.

Use it from a suite as ``adapter: "my_adapter:make_adapter"`` with this folder on ``PYTHONPATH``::

    PYTHONPATH=examples evalkit run examples/my_adapter_suite.yaml

or register it under a name, in your package's ``pyproject.toml``, and write ``adapter: my-unet``::

    [project.entry-points."evalkit.adapters"]
    my-unet = "my_adapter:make_adapter"
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from evalkit.generate import Adapter, GeneratedBatch, GenerationRequest
from evalkit.generate.adapter import batched
from evalkit.generate.denoise import CallCounter, sample, to_uint8
from evalkit.generate.samplers import make_scheduler, model_calls_per_sample
from evalkit.generate.seeding import initial_noise, sample_generators


class MyUNetAdapter(Adapter):
    """A class-conditional ε-prediction UNet with a null class for classifier-free guidance."""

    name = "my-unet"

    def __init__(self, device: str = "cpu", temperature: float = 1.0):
        from evalkit import zoo  # stands in for "load my model"

        self.device = torch.device(device)
        self.temperature = float(temperature)  # an example option: scales the initial noise
        self.unet, self.schedule = zoo.load_mnist_unet(trained=True)  # schedule: betas, prediction type
        self.unet.to(self.device).eval()
        self.null_class = zoo.NULL_CLASS

    def info(self) -> dict[str, Any]:
        """Recorded in run.json: whatever identifies the model and the options it ran with."""
        return {
            "adapter": "my_adapter:make_adapter",
            "temperature": self.temperature,
            "parameters": sum(p.numel() for p in self.unet.parameters()),
        }

    def expected_model_calls(self, sampler: str, steps: int, options: dict[str, Any]) -> int:
        """For ``evalkit run --dry-run``: the sampler's timestep count on this model's schedule."""
        return model_calls_per_sample(sampler, steps, self.schedule, options)

    def _eps(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, class_labels=labels).sample

    @torch.inference_mode()
    def generate(self, request: GenerationRequest) -> Iterator[GeneratedBatch]:
        if request.labels is None:
            raise ValueError("my-unet is class-conditional: set 'conditions: {classes: 10}' in the suite")
        for sl in batched(request.indices, request.batch_size):
            idx = request.indices[sl]
            gens = sample_generators(request.seed, idx)  # one per sample: (seed, i) only
            noise = self.temperature * initial_noise(gens, (1, 32, 32)).to(self.device)
            scheduler = make_scheduler(request.sampler, self.schedule, request.sampler_options)
            labels = torch.as_tensor(request.labels[sl], dtype=torch.long, device=self.device)
            uncond = torch.full_like(labels, self.null_class) if request.guidance != 1.0 else None
            counter = CallCounter(self._eps)  # counts calls: NFE is measured, not assumed
            x = sample(
                counter,
                scheduler,
                noise,
                request.steps,
                cond=labels,
                uncond=uncond,
                guidance=request.guidance,
                generators=gens,
            )
            nfe = counter.calls * (2 if uncond is not None else 1)  # CFG: cond + uncond in one batched call
            yield GeneratedBatch(to_uint8(x, idx), idx, counter.calls, nfe)


def make_adapter(device: str = "cpu", **options: Any) -> Adapter:
    """The factory evalkit calls with ``device`` and the suite's ``models[].options``."""
    return MyUNetAdapter(device=device, **options)
