"""Sampler settings made visible (issue 16): the schedule a sampler walked travels with each batch, and
``timestep_spacing`` (leading | linspace | trailing) is a sampler option wherever the scheduler takes it.

Expected timesteps and sigmas are computed here from diffusers' documented definitions (Lin et al. 2024,
table 2) and the training betas, not read back from a scheduler."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from evalkit.generate import GenerationRequest
from evalkit.generate.samplers import make_scheduler, samplers_for, schedule_info
from evalkit.generate.zoo_adapter import ZooMnistAdapter
from evalkit.suite import SuiteError, parse_suite

SCHEDULE = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 1e-4,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
    "clip_sample": False,
}


def expected_timesteps(spacing: str, steps: int, train: int = 1000) -> list[float]:
    """diffusers' three spacings, as Lin et al. (2024) tabulate them."""
    if spacing == "leading":
        return list(np.arange(0, steps)[::-1] * (train // steps))
    if spacing == "trailing":
        return list(np.round(np.arange(train, 0, -train / steps)) - 1)
    return list(np.linspace(0, train - 1, steps)[::-1].round())


def sigma(t: float) -> float:
    """σ_t = √((1 − ᾱ_t)/ᾱ_t) from the linear training betas."""
    abar = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    return float(np.sqrt((1 - abar[int(t)]) / abar[int(t)]))


@pytest.fixture(scope="module")
def zoo() -> ZooMnistAdapter:
    return ZooMnistAdapter()


def _schedule(adapter, sampler: str, steps: int, options=None) -> dict:
    req = GenerationRequest(np.arange(1), 0, sampler, steps, 1.0, 1, dict(options or {}), labels=np.zeros(1, int))
    (batch,) = list(adapter.generate(req))
    return batch.schedule


def test_ddim_starts_at_900_with_its_default_leading_spacing_and_at_999_trailing(zoo):
    leading = _schedule(zoo, "ddim", 10)
    assert leading["timesteps"] == expected_timesteps("leading", 10) and leading["timesteps"][0] == 900
    assert leading["timestep_spacing"] == "leading" and leading["scheduler"] == "DDIMScheduler"
    assert leading["config_overrides"] == {"eta": 0.0}
    # DDIM keeps no sigmas: the recorded ones are σ_t at its timesteps, on the same scale as Euler's
    assert leading["sigmas_from"] == "alphas_cumprod"
    assert leading["sigmas"] == pytest.approx([sigma(t) for t in leading["timesteps"]], rel=1e-4)  # float32 ᾱ
    trailing = _schedule(zoo, "ddim", 10, {"timestep_spacing": "trailing"})
    assert trailing["timesteps"] == expected_timesteps("trailing", 10) and trailing["timesteps"][0] == 999
    assert trailing["config_overrides"] == {"eta": 0.0, "timestep_spacing": "trailing"}


def test_euler_records_its_own_sigmas(zoo):
    sch = _schedule(zoo, "euler", 4)
    assert sch["timestep_spacing"] == "linspace" and sch["sigmas_from"] == "scheduler"
    assert sch["timesteps"] == pytest.approx(expected_timesteps("linspace", 4))
    # Euler interpolates σ at fractional t; at these integer timesteps it is σ_t, then the final 0
    assert sch["sigmas"] == pytest.approx([sigma(t) for t in sch["timesteps"]] + [0.0], rel=1e-4)


def test_the_images_do_not_depend_on_recording_the_schedule(zoo):
    """Recording reads the scheduler after sampling: the batch equals one from a plain sampling loop."""
    from evalkit.generate.denoise import sample, to_uint8
    from evalkit.generate.seeding import initial_noise, sample_generators

    req = GenerationRequest(np.arange(3), 0, "euler", 3, 1.0, 3, labels=np.arange(3))
    (batch,) = list(zoo.generate(req))
    gens = sample_generators(0, np.arange(3))
    labels = torch.arange(3)
    with torch.inference_mode():
        x = sample(
            zoo._denoise,
            make_scheduler("euler", zoo.schedule),
            initial_noise(gens, (1, 32, 32)),
            3,
            cond=labels,
            uncond=None,
            guidance=1.0,
            generators=gens,
        )
    assert torch.equal(batch.images, to_uint8(x))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
# timestep spacing is a property of discrete-timestep (ε/v) schedules; flow and EDM samplers walk sigmas
@pytest.mark.parametrize("name", [s for s in samplers_for("eps") if s != "native"])
def test_every_sampler_takes_timestep_spacing(name):
    """Trailing spacing starts every sampler at the last training step (Heun-type ones repeat inner steps)."""
    for spacing in ("trailing", "linspace"):
        scheduler = make_scheduler(name, SCHEDULE, {"timestep_spacing": spacing})
        scheduler.set_timesteps(10)
        info = schedule_info(name, scheduler, {"timestep_spacing": spacing, "noise_sampler_seed": 3})
        assert info["timestep_spacing"] == spacing and info["timesteps"][0] == pytest.approx(999)
        assert "noise_sampler_seed" not in info["config_overrides"]  # per-batch plumbing, not a setting


BASE = {
    "name": "spacing",
    "models": [{"name": "m", "adapter": "noise"}],
    "samplers": ["ddim"],
    "steps": [2],
    "samples": 4,
    "metrics": ["throughput"],
}


def test_an_unknown_spacing_is_refused_naming_the_field_and_the_choices():
    doc = {**copy.deepcopy(BASE), "samplers": [{"name": "ddim", "options": {"timestep_spacing": "sideways"}}]}
    with pytest.raises(SuiteError) as e:
        parse_suite(doc, file="s.yaml")
    assert e.value.field == "samplers[0].options.timestep_spacing"
    assert "expected one of leading, linspace, trailing; got 'sideways'" in e.value.message
    ok = {**copy.deepcopy(BASE), "samplers": [{"name": "euler", "options": {"timestep_spacing": "trailing"}}]}
    assert parse_suite(ok).samplers[0].options == {"timestep_spacing": "trailing"}
