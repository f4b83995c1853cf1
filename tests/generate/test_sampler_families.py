"""Samplers by model family (issue 17): each new sampler's declared calls rule against diffusers for 1-50 steps,
a run of each on a tiny random-weight model of its family through the shared loop, the refusal of a sampler on a
model of another family, and the zoo's images unchanged by the model-output-as-data loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evalkit.cli import main
from evalkit.errors import ConfigError
from evalkit.generate.denoise import CallCounter, sample
from evalkit.generate.planning import ZOO_FAMILY, family_problems
from evalkit.generate.samplers import FAMILIES, check_family, get_sampler, make_scheduler, samplers_for
from evalkit.generate.seeding import initial_noise, sample_generators
from evalkit.zoo.schedule import NOISE_SCHEDULE

NEW = {
    "flow": ("flow_euler", "flow_heun", "flow_euler_sde", "flow_dpmpp_2m", "flow_unipc", "flow_lcm"),
    "eps": ("lcm", "tcd", "dpmpp_3m_sde", "sa_solver"),
    "edm": ("edm_euler", "edm_dpmpp_2m"),
}
BASE = {"eps": dict(NOISE_SCHEDULE), "v": dict(NOISE_SCHEDULE), "flow": {}, "edm": {}}
CASES = [(f, n) for f, names in NEW.items() for n in names]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")


@pytest.mark.parametrize(("family", "name"), CASES)
def test_a_new_samplers_declared_calls_are_the_schedulers_timesteps_for_1_to_50_steps(family, name):
    defn = get_sampler(name)
    assert family in defn.families and defn.model_calls is not None
    scheduler = make_scheduler(name, BASE[family], family=family)
    counted = {}
    for steps in range(1, 51):
        scheduler.set_timesteps(steps)
        counted[steps] = len(scheduler.timesteps)
    assert {s: defn.model_calls(s) for s in counted} == counted


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


@pytest.mark.parametrize(("family", "name"), [*CASES, ("v", "lcm"), ("v", "dpmpp_3m_sde")])
def test_a_new_sampler_runs_on_a_tiny_model_of_its_family_with_the_declared_calls(tiny_unet, family, name):
    for steps in (2, 5):
        scheduler = make_scheduler(name, BASE[family], family=family)
        if FAMILIES[family] is not None and "prediction_type" in scheduler.config:
            assert scheduler.config.prediction_type == FAMILIES[family]  # the output is read as what it is
        x, calls = _run(tiny_unet, scheduler, steps)
        assert x.shape == (2, 1, 8, 8) and torch.isfinite(x).all(), (name, steps)
        assert calls == get_sampler(name).model_calls(steps), (name, steps)


@pytest.mark.parametrize(("family", "name"), CASES)
def test_a_sampler_on_a_model_of_another_family_is_refused_naming_those_that_apply(family, name):
    other = "flow" if family != "flow" else "eps"
    with pytest.raises(ConfigError) as e:
        check_family(name, other, "m")
    fit = samplers_for(other)
    assert str(e.value) == f"sampler {name} does not apply to model m (family {other}); samplers that do: " + (
        ", ".join(fit)
    )
    assert name not in fit and "native" in fit


def test_the_zoo_is_an_eps_model_and_a_suite_pairing_it_with_a_flow_sampler_fails_preflight(tmp_path, capsys):
    from evalkit.generate.zoo_adapter import ZooMnistAdapter

    assert ZooMnistAdapter.family == ZOO_FAMILY == "eps"
    assert family_problems([("mnist", "zoo", "ddim"), ("n", "noise", "flow_euler"), ("x", "diffusers", "tcd")]) == []
    assert family_problems([("mnist", "zoo", "flow_euler")])[0].startswith(
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
