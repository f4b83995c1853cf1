"""Each built-in sampler's declared model calls per sample (``SamplerDef.model_calls``, what ``--dry-run`` plans
with, no diffusers imported) against diffusers' own schedulers, and where a plan falls back to building them."""

from __future__ import annotations

import pytest

from evalkit.cli import main
from evalkit.generate.planning import planned_model_calls
from evalkit.generate.samplers import (
    SamplerDef,
    declared_model_calls,
    get_sampler,
    make_scheduler,
    model_calls_per_sample,
)
from evalkit.registry import SAMPLERS
from evalkit.zoo.schedule import NOISE_SCHEDULE

BUILTIN = [
    *("ddpm", "ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm2"),
    *("dpmpp_2m", "dpmpp_2m_karras", "dpmpp_sde", "unipc", "deis"),
]
T = NOISE_SCHEDULE["num_train_timesteps"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("name", BUILTIN)
def test_a_builtin_samplers_declared_calls_are_the_schedulers_timesteps_for_1_to_50_steps(name):
    rule = get_sampler(name).model_calls
    assert rule is not None, f"built-in sampler {name} declares no model-calls rule"
    scheduler = make_scheduler(name, dict(NOISE_SCHEDULE))  # built once: building dpm2's takes 0.25 s
    counted = {}
    for steps in range(1, 51):
        scheduler.set_timesteps(steps)
        counted[steps] = len(scheduler.timesteps)
    assert {s: rule(s) for s in counted} == counted
    for steps in (1, 2, 17, 50, T):  # and as the adapters ask: a fresh scheduler each time
        assert declared_model_calls(name, steps, num_train_timesteps=T) == model_calls_per_sample(
            name, steps, NOISE_SCHEDULE
        )


def test_a_sampler_declaration_does_not_cover_options_other_step_counts_or_a_sampler_without_a_rule(monkeypatch):
    assert declared_model_calls("heun", 4, num_train_timesteps=T) == 7
    assert declared_model_calls("pndm", 4, {"skip_prk_steps": False}, num_train_timesteps=T) is None
    assert declared_model_calls("ddim", 0, num_train_timesteps=T) is None
    assert declared_model_calls("ddim", T + 1, num_train_timesteps=T) is None
    monkeypatch.setitem(SAMPLERS._items, "ruleless", SamplerDef("ruleless", "DDIMScheduler"))
    assert declared_model_calls("ruleless", 4, num_train_timesteps=T) is None


def test_the_planned_calls_of_the_builtin_adapters_and_where_a_plan_must_build_the_adapter():
    assert planned_model_calls("zoo", {}, "dpm2", 5, {}) == 9
    assert planned_model_calls("zoo", {"weights": "untrained"}, "pndm", 3, {}) == 4
    assert planned_model_calls("noise", {"resolution": 8}, "heun", 5, {}) == 0
    assert planned_model_calls("zoo", {"weights": "other"}, "ddim", 5, {}) is None  # the adapter refuses it
    assert planned_model_calls("zoo", {}, "ddim", 5, {"timestep_spacing": "trailing"}) is None
    assert planned_model_calls("diffusers", {"path": "x"}, "ddim", 5, {}) is None


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_a_dry_run_with_sampler_options_builds_the_zoo_adapter_and_asks_it(tmp_path, capsys):
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "name: opts\nmodels: [{name: m, adapter: zoo}]\n"
        "samplers: [{name: pndm, options: {skip_prk_steps: false}}, heun]\nsteps: [4]\nsamples: 4\n"
        "conditions: {classes: 10}\nmetrics: [throughput]\n"
    )
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    prk = model_calls_per_sample("pndm", 4, NOISE_SCHEDULE, {"skip_prk_steps": False})
    assert prk != declared_model_calls("pndm", 4, num_train_timesteps=T)  # the options change the count
    batches = 1 + 3  # the cell's one batch (its model × sampler's warm-up) + timing.repeats = 3 timing-only batches
    assert f"model calls/sample {prk:>4}   batched calls {prk * batches}" in out
    assert f"model calls/sample    7   batched calls {7 * batches}" in out  # heun, planned
    assert f"total batched model calls (estimate): {(prk + 7) * batches}\n" in out
