"""Per-sample seeding and the sampler registry's model-call accounting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evalkit.generate.denoise import CallCounter, sample
from evalkit.generate.samplers import available_samplers, make_scheduler, model_calls_per_sample
from evalkit.generate.seeding import initial_noise, sample_generators, sample_seed

SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
}
REQUIRED = {
    "ddpm",
    "ddim",
    "pndm",
    "lms",
    "euler",
    "euler_a",
    "heun",
    "dpmpp_2m",
    "dpmpp_2m_karras",
    "dpmpp_sde",
    "unipc",
    "deis",
}


def test_sample_noise_depends_on_seed_and_index_only():
    a = initial_noise(sample_generators(0, range(10)), (1, 4, 4))
    b = initial_noise(sample_generators(0, [3, 7]), (1, 4, 4))
    assert torch.equal(a[3], b[0]) and torch.equal(a[7], b[1])
    assert not torch.equal(a[3], a[4])
    c = initial_noise(sample_generators(1, [3]), (1, 4, 4))
    assert not torch.equal(a[3], c[0])
    seeds = {sample_seed(s, i) for s in range(20) for i in range(200)}
    assert len(seeds) == 20 * 200  # no collisions across nearby (seed, index) pairs


def test_registry_covers_the_required_samplers():
    assert set(available_samplers()) >= REQUIRED


def _fake_denoiser(x, t, cond):
    # a smooth, deterministic ε: enough to exercise every scheduler's arithmetic
    return 0.5 * x + 0.01 * cond.float().view(-1, 1, 1, 1)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_counted_calls_match_the_schedulers_timesteps(name):
    steps = 6
    gens = sample_generators(0, range(3))
    noise = initial_noise(gens, (1, 8, 8))
    counter = CallCounter(_fake_denoiser)
    sched = make_scheduler(name, SCHEDULE, {"noise_sampler_seed": 0} if name == "dpmpp_sde" else None)
    out = sample(
        counter,
        sched,
        noise,
        steps,
        cond=torch.tensor([1, 2, 3]),
        uncond=torch.tensor([10] * 3),
        guidance=2.0,
        generators=gens,
    )
    assert out.shape == noise.shape and torch.isfinite(out).all()
    expected = model_calls_per_sample(name, steps, SCHEDULE, {"noise_sampler_seed": 0} if name == "dpmpp_sde" else None)
    assert counter.calls == expected
    assert counter.images == 2 * 3 * expected  # guidance doubles the batch of every call
    if name in ("heun", "dpmpp_sde"):
        assert expected == 2 * steps - 1  # second-order: two calls a step, the last step one
    elif name == "pndm":
        assert expected == steps + 1  # PLMS warm-up step
    else:
        assert expected == steps


def test_guidance_one_makes_no_unconditional_pass():
    gens = sample_generators(0, range(2))
    counter = CallCounter(_fake_denoiser)
    sample(
        counter,
        make_scheduler("ddim", SCHEDULE),
        initial_noise(gens, (1, 4, 4)),
        5,
        cond=torch.tensor([0, 1]),
        uncond=torch.tensor([10, 10]),
        guidance=1.0,
        generators=gens,
    )
    assert counter.calls == 5 and counter.images == 10


def test_stochastic_sampler_is_per_sample_deterministic():
    """euler_a draws noise each step from each sample's own generator: batch composition is irrelevant."""

    def run(indices):
        gens = sample_generators(0, indices)
        x = sample(
            _fake_denoiser,
            make_scheduler("euler_a", SCHEDULE),
            initial_noise(gens, (1, 4, 4)),
            5,
            cond=torch.zeros(len(indices), dtype=torch.long),
            uncond=None,
            guidance=1.0,
            generators=gens,
        )
        return x

    full, part = run([0, 1, 2, 3]), run([2, 3])
    np.testing.assert_allclose(full[2:].numpy(), part.numpy(), rtol=0, atol=1e-5)
