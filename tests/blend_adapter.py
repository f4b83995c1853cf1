"""A task adapter for tests of what comes after generation (study, gate, report): its output is a known blend of the
source and seeded noise, ``(1 − s)·source + s·amp·noise`` at strength s (inpaint: inside the mask only; no task:
the noise), so fidelity to the source falls as strength rises. ``amp`` is 1 for ddim and 0.6 for euler (so the two
samplers differ), plus ``worse`` above strength ``worse_above`` (a regression to catch). Used as the
``module:function`` adapter ``blend_adapter:make`` (the tests folder is on the path)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from evalkit.generate.adapter import Adapter, GeneratedBatch, GenerationRequest, batched, check_task
from evalkit.generate.seeding import sample_generators

AMP = {"ddim": 1.0, "euler": 0.6}


class Blend(Adapter):
    name = "blend"
    tasks = ("img2img", "inpaint")

    def __init__(self, worse_above: float = 1.0, worse: float = 0.0) -> None:
        self.worse_above, self.worse = float(worse_above), float(worse)

    def info(self) -> dict[str, Any]:
        return {"adapter": "blend", "worse_above": self.worse_above, "worse": self.worse}

    def expected_model_calls(self, sampler: str, steps: int, options: dict, **task: Any) -> int:
        return steps

    def generate(self, request: GenerationRequest) -> Iterator[GeneratedBatch]:
        check_task(self, request)
        s = 1.0 if request.strength is None else float(request.strength)
        amp = AMP.get(request.sampler, 1.0) + (self.worse if s > self.worse_above else 0.0)
        for sl in batched(request.indices, request.batch_size):
            idx = request.indices[sl]
            shape = (3, 32, 32) if request.images is None else tuple(request.images.shape[1:])
            gens = sample_generators(request.seed, idx)
            noise = torch.stack([torch.rand(shape, generator=g, dtype=torch.float64) for g in gens])
            if request.task is None:
                out = noise
            else:
                src = request.images[sl].to(torch.float64) / 255.0
                out = ((1 - s) * src + s * amp * noise).clamp(0, 1)
                if request.task == "inpaint":
                    out = torch.where(request.masks[sl].bool(), out, src)
            yield GeneratedBatch(out, np.asarray(idx), request.steps, request.steps)


def make(device: str = "cpu", **options: Any) -> Blend:
    return Blend(**options)
