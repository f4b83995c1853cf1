"""Samplers by model family (issue 17): every registered sampler runs on a tiny random-weight model of each of its
families through the shared loop and is refused on every other family; the new samplers' declared calls rules
against diffusers for 1-50 steps; the consistency-model sampler (cm) against diffusers' own loop; and the zoo's
images unchanged by the model-output-as-data loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evalkit.cli import main
from evalkit.errors import ConfigError
from evalkit.generate import planning
from evalkit.generate.denoise import CallCounter, sample
from evalkit.generate.planning import family_problems
from evalkit.generate.samplers import (
    FAMILIES,
    NATIVE,
    available_samplers,
    check_family,
    declared_model_calls,
    get_sampler,
    make_scheduler,
    samplers_for,
)
from evalkit.generate.seeding import initial_noise, sample_generators
from evalkit.zoo.schedule import NOISE_SCHEDULE

OLDER = (
    *("ddpm", "ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm2"),
    *("dpmpp_2m", "dpmpp_2m_karras", "dpmpp_sde", "unipc", "deis"),
)
NEW = {
    "flow": ("flow_euler", "flow_heun", "flow_euler_sde", "flow_dpmpp_2m", "flow_unipc", "flow_lcm"),
    "eps": ("lcm", "tcd", "dpmpp_3m_sde", "sa_solver"),
    "edm": ("edm_euler", "edm_dpmpp_2m", "cm"),
}
EVERY = (*OLDER, *(n for names in NEW.values() for n in names))  # every registered sampler but native
BASE = {"eps": dict(NOISE_SCHEDULE), "v": dict(NOISE_SCHEDULE), "flow": {}, "edm": {}}
# the model's own scheduler config, per family, for ``native``
NATIVE_BASE = {
    "eps": {**NOISE_SCHEDULE, "_class_name": "DDPMScheduler"},
    "v": {**NOISE_SCHEDULE, "prediction_type": "v_prediction", "_class_name": "DDIMScheduler"},
    "flow": {"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "shift": 1.0},
    "edm": {"_class_name": "EDMEulerScheduler", "sigma_data": 0.5},
}
CASES = [(f, n) for f, names in NEW.items() for n in names]
RUNS = [(f, n) for n in EVERY for f in get_sampler(n).families]  # each sampler on each of its families
REFUSALS = [(f, n) for n in EVERY for f in FAMILIES if f not in get_sampler(n).families]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


def test_every_registered_sampler_is_covered_here_and_each_declares_its_families():
    assert set(EVERY) | {NATIVE} == set(available_samplers())
    assert {n for n in OLDER if get_sampler(n).families != ("eps", "v")} == set()
    assert {f: [n for n in names if get_sampler(n).families != (f,)] for f, names in NEW.items()} == {
        "flow": [],
        "eps": ["lcm", "tcd", "dpmpp_3m_sde", "sa_solver"],  # ε and v: they read prediction_type
        "edm": [],
    }
    assert get_sampler(NATIVE).families == tuple(FAMILIES)


@pytest.mark.parametrize(("family", "name"), CASES)
def test_a_new_samplers_declared_calls_are_the_schedulers_timesteps_for_1_to_50_steps(family, name):
    """Up to the scheduler's num_train_timesteps; beyond it (cm's 40) diffusers refuses and no rule is declared."""
    defn = get_sampler(name)
    assert family in defn.families and defn.model_calls is not None
    scheduler = make_scheduler(name, BASE[family], family=family)
    trained_on = scheduler.config.num_train_timesteps
    counted, refused = {}, []
    for steps in range(1, 51):
        if steps > trained_on:
            with pytest.raises(ValueError, match="num_inference_steps"):
                scheduler.set_timesteps(steps)
            assert declared_model_calls(name, steps, num_train_timesteps=trained_on) is None
            refused.append(steps)
            continue
        scheduler.set_timesteps(steps)
        counted[steps] = len(scheduler.timesteps)
        assert declared_model_calls(name, steps, num_train_timesteps=trained_on) == counted[steps]
    assert {s: defn.model_calls(s) for s in counted} == counted
    assert refused == ([] if name != "cm" else list(range(41, 51)))


def test_cm_declares_one_call_per_step_for_1_to_50_steps_on_a_longer_training_schedule():
    scheduler = make_scheduler("cm", {"num_train_timesteps": 1000}, family="edm")
    for steps in range(1, 51):
        scheduler.set_timesteps(steps)
        assert len(scheduler.timesteps) == get_sampler("cm").model_calls(steps) == steps


@pytest.fixture(scope="module")
def tiny_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        layers_per_block=1,
        block_out_channels=(8, 8),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


def _run(unet, scheduler, steps: int, seed: int = 3):
    """The tiny UNet's output, whatever the family says it is (ε, v, flow velocity, EDM's F), through ``sample``."""
    counter = CallCounter(lambda x, t, cond: unet(x, t.reshape(-1).expand(x.shape[0])).sample)
    idx = np.arange(2)
    gens = sample_generators(seed, idx)
    with torch.inference_mode():
        x = sample(
            counter,
            scheduler,
            initial_noise(gens, (1, 8, 8)),
            steps,
            cond=None,
            uncond=None,
            guidance=1.0,
            generators=gens,
        )
    return x, counter.calls


@pytest.mark.parametrize(("family", "name"), RUNS)
def test_every_sampler_runs_on_a_tiny_model_of_each_of_its_families_with_the_declared_calls(tiny_unet, family, name):
    for steps in (2, 5):
        scheduler = make_scheduler(name, BASE[family], family=family)
        if FAMILIES[family] is not None and "prediction_type" in scheduler.config:
            assert scheduler.config.prediction_type == FAMILIES[family]  # the output is read as what it is
        x, calls = _run(tiny_unet, scheduler, steps)
        assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all(), (name, steps)
        assert calls == get_sampler(name).model_calls(steps), (name, steps)


@pytest.mark.parametrize("family", list(NATIVE_BASE))
def test_native_runs_the_models_own_scheduler_on_every_family_and_is_never_refused(tiny_unet, family):
    for other in FAMILIES:
        check_family(NATIVE, other, "m")
    scheduler = make_scheduler(NATIVE, NATIVE_BASE[family], family=family)
    assert type(scheduler).__name__ == NATIVE_BASE[family]["_class_name"]
    x, calls = _run(tiny_unet, scheduler, 3)
    assert torch.isfinite(x).all() and calls == len(scheduler.timesteps) == 3


@pytest.mark.parametrize(("family", "name"), REFUSALS)
def test_a_sampler_on_a_model_of_another_family_is_refused_naming_those_that_apply(family, name):
    with pytest.raises(ConfigError) as e:
        check_family(name, family, "m")
    fit = samplers_for(family)
    assert str(e.value) == f"sampler {name} does not apply to model m (family {family}); samplers that do: " + (
        ", ".join(fit)
    )
    assert name not in fit and "native" in fit


def test_cm_is_an_edm_sampler_refused_on_eps_v_flow_and_x0():
    assert get_sampler("cm").families == ("edm",) and get_sampler("cm").stochastic
    assert [f for f in FAMILIES if f != "edm" and "cm" in samplers_for(f)] == []
    assert "cm" in samplers_for("edm")


def test_cm_through_the_shared_loop_is_diffusers_consistency_model_loop_bit_for_bit(tiny_unet):
    """ConsistencyModelPipeline's loop written out on diffusers' scheduler: noise · init_noise_sigma (σ_max),
    scale_model_input (÷ √(σ² + σ_data²)), the raw output F to step() with the per-sample generators (step applies
    c_skip, c_out itself and re-noises). evalkit's loop must give the same samples."""
    from diffusers import CMStochasticIterativeScheduler

    for steps in (1, 3):
        got, calls = _run(tiny_unet, make_scheduler("cm", BASE["edm"], family="edm"), steps, seed=9)
        scheduler = CMStochasticIterativeScheduler()
        gens = sample_generators(9, np.arange(2))
        x = initial_noise(gens, (1, 8, 8)) * scheduler.init_noise_sigma
        scheduler.set_timesteps(steps)
        assert scheduler.init_noise_sigma == 80.0 and float(scheduler.sigmas[0]) == pytest.approx(80.0)
        with torch.inference_mode():
            for t in scheduler.timesteps:
                scaled = scheduler.scale_model_input(x, t)
                out = tiny_unet(scaled, t.reshape(-1).expand(2)).sample
                x = scheduler.step(out, t, x, generator=list(gens)).prev_sample
        assert calls == steps and torch.equal(got, x), steps
        assert got.abs().max() <= 1.0  # clip_denoised, and the last step adds no noise (σ_min)


def test_the_zoo_is_an_eps_model_and_a_suite_pairing_it_with_a_flow_sampler_fails_preflight(tmp_path, capsys):
    from evalkit.generate.zoo_adapter import ZooMnistAdapter

    assert ZooMnistAdapter(weights="untrained").family == planning.model_family("zoo", {}) == "eps"
    fine = [("mnist", "zoo", {}, "ddim"), ("n", "noise", {}, "flow_euler"), ("x", "diffusers", {}, "tcd")]
    assert family_problems(fine) == []
    assert family_problems([("mnist", "zoo", {}, "flow_euler")])[0].startswith(
        "sampler flow_euler does not apply to model mnist (family eps); samplers that do: ddim, ddpm, deis, "
    )
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: fam\nmodels: [{name: mnist, adapter: zoo}]\nsamplers: [ddim, flow_heun]\nsteps: [2]\nsamples: 2\n"
        "conditions: {classes: 10}\nmetrics: [throughput]\n"
    )
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "--dry-run"]) == 2
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "sampler flow_heun does not apply to model mnist (family eps); samplers that do: ddim," in out


def test_the_zoo_images_are_bit_identical_to_the_scheduler_path_and_native_is_its_ddpm():
    from evalkit.generate.adapter import GenerationRequest
    from evalkit.generate.zoo_adapter import ZooMnistAdapter

    zoo = ZooMnistAdapter(weights="untrained")
    labels = np.array([3, 7])
    for name in ("ddim", "euler_a", "native"):
        req = GenerationRequest(
            indices=np.arange(2), seed=5, sampler=name, steps=3, guidance=2.0, batch_size=2, labels=labels
        )
        got = next(iter(zoo.generate(req)))
        # "before": the ε loop written out on diffusers' scheduler directly
        from diffusers import DDPMScheduler

        scheduler = (
            make_scheduler(name, NOISE_SCHEDULE) if name != "native" else DDPMScheduler.from_config(NOISE_SCHEDULE)
        )
        gens = sample_generators(5, np.arange(2))
        x = initial_noise(gens, (1, 32, 32)) * scheduler.init_noise_sigma
        scheduler.set_timesteps(3)
        y = torch.as_tensor(labels)
        with torch.inference_mode():
            for t in scheduler.timesteps:
                x_in = scheduler.scale_model_input(x, t)
                out = zoo.unet(torch.cat([x_in, x_in]), t, class_labels=torch.cat([y, torch.full_like(y, 10)])).sample
                e_c, e_u = out.chunk(2)
                kw = {"generator": list(gens)}  # DDPM, DDIM and Euler ancestral all take generators
                x = scheduler.step(e_u + 2.0 * (e_c - e_u), t, x, **kw).prev_sample
        expected = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).repeat(1, 3, 1, 1)
        assert torch.equal(got.images, expected), name
        assert got.model_calls == 3
