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
from evalkit.generate.samplers import get_sampler, make_scheduler, samplers_for, schedule_info
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


# ---- flow samplers' sigma options (issue 17): shift, dynamic (resolution-dependent) shift, Karras/exponential/beta


def _flow_schedule(name: str, options: dict, shape: tuple[int, ...], steps: int = 6) -> tuple[dict, torch.Tensor]:
    """Sample a zero velocity field (x stays the noise, rescaled) through ``denoise.sample`` at ``shape``; the
    schedule it recorded, as an adapter records it."""
    from evalkit.generate.denoise import sample

    scheduler = make_scheduler(name, {}, options, family="flow")
    gens = [torch.Generator().manual_seed(i) for i in range(shape[0])]
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    x = sample(
        lambda x, t, c: torch.zeros_like(x),
        scheduler,
        noise,
        steps,
        cond=None,
        uncond=None,
        guidance=1.0,
        generators=gens,
    )
    return schedule_info(name, scheduler, options), x


@pytest.fixture(scope="module")
def diffusers_calculate_shift():
    """diffusers' own mu (its Flux pipeline module imports transformers: once, here)."""
    return pytest.importorskip("diffusers.pipelines.flux.pipeline_flux").calculate_shift


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", ["flow_euler", "flow_lcm", "flow_dpmpp_2m", "flow_unipc"])
def test_dynamic_shifting_takes_mu_from_the_resolution_as_diffusers_pipelines_do(name, diffusers_calculate_shift):
    """mu = calculate_shift((H/2)·(W/2), base/max seq len and shift of the config): the recorded sigmas equal
    diffusers' scheduler set with diffusers' own mu, at two resolutions, and a larger image is shifted more."""
    recorded = {}
    for side in (32, 128):  # 256 tokens (the base: mu = base_shift) and 4096 (the max: mu = max_shift)
        info, _ = _flow_schedule(name, {"use_dynamic_shifting": True}, (1, 1, side, side))
        reference = make_scheduler(name, {}, {"use_dynamic_shifting": True}, family="flow")  # the same class/config
        cfg = reference.config
        mu = diffusers_calculate_shift(
            (side // 2) * (side // 2),
            cfg.get("base_image_seq_len", 256),
            cfg.get("max_image_seq_len", 4096),
            cfg.get("base_shift", 0.5),
            cfg.get("max_shift", 1.15),
        )
        reference.set_timesteps(6, mu=mu)
        assert info["sigmas"] == pytest.approx(reference.sigmas.double().tolist(), abs=1e-7)
        assert info["timesteps"] == pytest.approx(reference.timesteps.double().tolist(), abs=1e-4)
        assert (
            info["dynamic_shift"]["mu"] == pytest.approx(mu) and info["dynamic_shift"]["image_seq_len"] == side**2 // 4
        )
        assert info["config_overrides"]["use_dynamic_shifting"] is True
        recorded[side] = info
    assert recorded[32]["dynamic_shift"]["mu"] == pytest.approx(0.5)
    assert recorded[128]["dynamic_shift"]["mu"] == pytest.approx(1.15)
    assert all(b > a for a, b in zip(recorded[32]["sigmas"][1:-1], recorded[128]["sigmas"][1:-1]))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_flow_euler_dynamic_shift_is_the_exponential_time_shift_of_its_grid():
    """Closed form: σ' = e^mu / (e^mu + 1/σ − 1) on the grid linspace(1, 1/T, n), mu = 0.5 + 0.65·(n_tok − 256)/3840."""
    info, _ = _flow_schedule("flow_euler", {"use_dynamic_shifting": True}, (2, 3, 64, 48))
    n_tok = 32 * 24
    mu = 0.5 + (1.15 - 0.5) * (n_tok - 256) / (4096 - 256)
    grid = np.linspace(1.0, 1 / 1000, 6)
    expected = np.exp(mu) / (np.exp(mu) + (1 / grid - 1))
    assert info["dynamic_shift"] == {
        "mu": pytest.approx(mu),
        "image_seq_len": n_tok,
        "base_image_seq_len": 256,
        "max_image_seq_len": 4096,
        "base_shift": 0.5,
        "max_shift": 1.15,
    }
    assert info["sigmas"] == pytest.approx([*expected, 0.0], abs=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_flow_shift_moves_the_sigmas_as_the_closed_form_and_no_dynamic_shift_is_recorded():
    """σ' = s·σ/(1 + (s − 1)·σ) (SD3's shift, Esser et al. 2024). FlowMatchEuler's grid runs from 1 to its own σ_min,
    the shifted 1/T; DPM-Solver's flow sigmas (``flow_shift``) shift 1 − linspace(1, 1/T, n + 1), highest first."""
    s, T, n = 3.0, 1000, 6
    shift = lambda sig: s * sig / (1 + (s - 1) * sig)  # noqa: E731
    euler, _ = _flow_schedule("flow_euler", {"shift": s}, (1, 1, 8, 8), n)
    assert euler["sigmas"] == pytest.approx([*shift(np.linspace(1, shift(1 / T), n)), 0.0], abs=1e-6)
    assert "dynamic_shift" not in euler and euler["config_overrides"] == {"shift": 3.0}
    plain, _ = _flow_schedule("flow_euler", {}, (1, 1, 8, 8), n)
    assert plain["sigmas"] == pytest.approx([*np.linspace(1, 1 / T, n), 0.0], abs=1e-6)
    dpm, _ = _flow_schedule("flow_dpmpp_2m", {"flow_shift": s}, (1, 1, 8, 8), n)
    assert dpm["sigmas"] == pytest.approx([*shift(1 - np.linspace(1, 1 / T, n + 1))[::-1][:-1], 0.0], abs=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("option", ["use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas"])
def test_flow_euler_and_flow_lcm_take_karras_exponential_and_beta_sigmas_on_flow_sigmas(option):
    from diffusers import FlowMatchEulerDiscreteScheduler

    for name in ("flow_euler", "flow_lcm"):
        get_sampler(name).check_options({option: True, "shift": 2.0})
        info, x = _flow_schedule(name, {option: True}, (1, 1, 8, 8))
        assert torch.isfinite(x).all() and info["sigmas"][0] == pytest.approx(1.0) and max(info["sigmas"]) <= 1
    reference = FlowMatchEulerDiscreteScheduler(**{option: True})
    reference.set_timesteps(6)
    assert _flow_schedule("flow_euler", {option: True}, (1, 1, 8, 8))[0]["sigmas"] == pytest.approx(
        reference.sigmas.double().tolist()
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize(
    ("name", "option"),
    [
        ("flow_dpmpp_2m", "use_karras_sigmas"),
        ("flow_dpmpp_2m", "use_exponential_sigmas"),
        ("flow_dpmpp_2m", "use_beta_sigmas"),
        ("flow_unipc", "use_exponential_sigmas"),
        ("flow_unipc", "use_beta_sigmas"),
    ],
)
def test_the_flow_solvers_refuse_sigma_options_that_drop_their_flow_sigmas(name, option):
    """Why: diffusers then walks the DDPM σ (≫ 1), not flow sigmas in [0, 1]. Should a diffusers release map them
    to flow sigmas, this test fails and the refusal can go."""
    scheduler = make_scheduler(name, {}, {option: True}, family="flow")
    scheduler.set_timesteps(6)
    assert float(scheduler.sigmas.max()) > 100
    doc = {**copy.deepcopy(BASE), "samplers": [{"name": name, "options": {option: True}}]}
    with pytest.raises(SuiteError) as e:
        parse_suite(doc, file="s.yaml")
    assert e.value.field == f"samplers[0].options.{option}"
    assert "diffusers ignores use_flow_sigmas under it" in e.value.message and "got True" in e.value.message
    assert parse_suite({**copy.deepcopy(BASE), "samplers": [{"name": name, "options": {option: False}}]})


def test_the_flow_options_parse_in_a_suite_and_flow_heun_takes_only_shift():
    doc = {
        **copy.deepcopy(BASE),
        "samplers": [
            {"name": "flow_euler", "options": {"shift": 3.0, "use_karras_sigmas": True}, "label": "fe_k"},
            {"name": "flow_euler", "options": {"use_dynamic_shifting": True, "max_shift": 1.15}, "label": "fe_dyn"},
            {"name": "flow_lcm", "options": {"use_beta_sigmas": True}},
            {"name": "flow_dpmpp_2m", "options": {"flow_shift": 3.0}},
            {"name": "flow_unipc", "options": {"use_dynamic_shifting": True, "use_karras_sigmas": True}},
            {"name": "flow_heun", "options": {"shift": 3.0}},
        ],
    }
    assert [s.label for s in parse_suite(doc).samplers] == [
        "fe_k", "fe_dyn", "flow_lcm", "flow_dpmpp_2m", "flow_unipc", "flow_heun"
    ]  # fmt: skip
    bad = {**copy.deepcopy(BASE), "samplers": [{"name": "flow_heun", "options": {"use_dynamic_shifting": True}}]}
    with pytest.raises(SuiteError) as e:
        parse_suite(bad)
    assert e.value.field == "samplers[0].options.use_dynamic_shifting"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_dynamically_shifted_sampler_counts_its_calls_without_an_image():
    from evalkit.generate.samplers import model_calls_per_sample

    for name in ("flow_euler", "flow_unipc", "flow_lcm"):
        assert model_calls_per_sample(name, 7, {}, {"use_dynamic_shifting": True}, family="flow") == 7
