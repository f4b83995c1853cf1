"""Throughput of the built-in MNIST diffusion model per sampler, for pytest-benchmark.

Not part of the main test run (``testpaths = ["tests"]``). Save a baseline once, then compare:

    pytest benchmarks/test_throughput.py --benchmark-autosave
    pytest benchmarks/test_throughput.py --benchmark-compare --benchmark-compare-fail=median:15%

The second command exits non-zero when any sampler's median time per batch is more than 15% slower
than the last saved run on the same machine (saves live in ``.benchmarks/<machine id>/``). Each round
generates one batch end to end (noise → scheduler loop with classifier-free guidance → uint8 images),
the work ``evalkit run`` times; ``extra_info`` records images/s, model calls and NFE. CPU by default;
``EVALKIT_BENCHMARK_DEVICE=cuda`` on a GPU runner. See docs/ci-checks.md.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

DEVICE = os.environ.get("EVALKIT_BENCHMARK_DEVICE", "cpu")  # e.g. cuda on a GPU runner
SAMPLERS = ["ddim", "dpmpp_2m", "euler", "heun"]
BATCH, STEPS, GUIDANCE = 32, 4, 3.0


@pytest.fixture(scope="module")
def model():
    """The trained zoo model (speed does not depend on the weights; untrained if they are missing)."""
    from evalkit.generate.zoo_adapter import ZooMnistAdapter
    from evalkit.zoo import ZooWeightsError

    try:
        return ZooMnistAdapter(weights="trained", device=DEVICE)
    except ZooWeightsError:
        return ZooMnistAdapter(weights="untrained", device=DEVICE)


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_generate_throughput(benchmark, model, sampler):
    from evalkit.generate import GenerationRequest

    request = GenerationRequest(
        indices=np.arange(BATCH),
        seed=0,
        sampler=sampler,
        steps=STEPS,
        guidance=GUIDANCE,
        batch_size=BATCH,
        labels=np.arange(BATCH) % 10,
        device=DEVICE,
    )

    def generate():
        out = list(model.generate(request))
        if DEVICE.startswith("cuda"):
            torch.cuda.synchronize()  # time the work, not the kernel launches
        return out

    benchmark.group = f"zoo mnist: {BATCH} images, {STEPS} steps, guidance {GUIDANCE:g}"
    batches = benchmark.pedantic(generate, rounds=3, warmup_rounds=1, iterations=1)
    images = torch.cat([b.images for b in batches])
    assert images.shape == (BATCH, 3, 32, 32) and images.dtype == torch.uint8
    median = benchmark.stats.stats.median
    benchmark.extra_info.update(
        sampler=sampler,
        device=DEVICE,
        images=BATCH,
        steps=STEPS,
        guidance=GUIDANCE,
        weights=model.weights,
        model_calls=batches[-1].model_calls,
        nfe=batches[-1].nfe,
        images_per_s=BATCH / median,
        ms_per_model_call=1000 * median / batches[-1].model_calls,
        torch_threads=torch.get_num_threads(),
    )
