"""The zoo adapter on its rectified-flow model (``model: mnist-flow``): family, refusals, counted calls, batch
invariance of the guidance methods, and the flow samplers through `evalkit run`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from evalkit.errors import ConfigError
from evalkit.generate.adapter import GenerationRequest
from evalkit.generate.planning import ZOO_MODELS, family_problems, model_family, planned_model_calls
from evalkit.generate.samplers import samplers_for
from evalkit.generate.zoo_adapter import ZooMnistAdapter


@pytest.fixture(scope="module")
def flow() -> ZooMnistAdapter:
    return ZooMnistAdapter(model="mnist-flow")


@pytest.fixture(scope="module")
def untrained() -> ZooMnistAdapter:
    """The architecture at its seeded init: enough for what does not depend on the weights."""
    return ZooMnistAdapter(model="mnist-flow", weights="untrained")


def test_family_is_known_without_building_and_matches_the_adapter(untrained):
    flow = untrained
    assert flow.family == model_family("zoo", {"model": "mnist-flow"}) == ZOO_MODELS["mnist-flow"][0] == "flow"
    assert ZooMnistAdapter(weights="untrained").family == model_family("zoo", {}) == "eps"
    assert flow.info()["model"] == "mnist-flow" and flow.info()["family"] == "flow"
    with pytest.raises(ConfigError, match="zoo option 'model': expected one of mnist-unet, mnist-flow; got 'mnist-x'"):
        ZooMnistAdapter(model="mnist-x")


def test_eps_samplers_are_refused_on_the_flow_model_with_those_that_fit(untrained):
    with pytest.raises(ConfigError) as err:
        untrained.expected_model_calls("ddim", 8, {})
    assert "sampler ddim does not apply to model mnist-flow (family flow)" in str(err.value)
    assert all(name in str(err.value) for name in samplers_for("flow"))
    pairs = [("f", "zoo", {"model": "mnist-flow"}, "ddim"), ("e", "zoo", {}, "flow_euler"), ("f", "zoo", {}, "ddim")]
    problems = family_problems(pairs)
    assert len(problems) == 2 and "model f (family flow)" in problems[0] and "model e (family eps)" in problems[1]


@pytest.mark.parametrize("sampler,steps", [("flow_euler", 8), ("flow_heun", 8), ("flow_dpmpp_2m", 6)])
def test_planned_calls_equal_the_schedulers(untrained, sampler, steps):
    planned = planned_model_calls("zoo", {"model": "mnist-flow"}, sampler, steps, {})
    assert (
        planned
        == untrained.expected_model_calls(sampler, steps, {})
        == (2 * steps - 1 if sampler == "flow_heun" else steps)
    )


def _request(n: int, batch: int, method: str, options: dict | None = None, sampler: str = "flow_euler"):
    idx = np.arange(n)
    return GenerationRequest(
        idx, 0, sampler, 6, 3.0, batch, labels=idx % 10, guidance_method=method, guidance_options=options or {}
    )


@pytest.mark.parametrize("method,options", [("cfg_rescale", {"phi": 0.7}), ("apg", {"eta": 0.5, "momentum": -0.5})])
def test_guidance_methods_on_the_flow_model_are_batch_invariant(flow, method, options):
    """8 samples in batches of 3 and of 8: the same images to 1/255 on ≥ 99.9 % of pixels (float32 convolutions
    may differ in the last bit with the batch size)."""
    images = [torch.cat([b.images for b in flow.generate(_request(8, bs, method, options))]) for bs in (3, 8)]
    close = ((images[0].int() - images[1].int()).abs() <= 1).float().mean()
    assert close >= 0.999
    nfe = {b.nfe for b in flow.generate(_request(3, 3, method, options))}
    assert nfe == {12}  # 6 steps, both predictions at each


def test_flow_samplers_and_methods_run_through_evalkit_run(tmp_path):
    """flow_euler, flow_heun, flow_dpmpp_2m and flow_euler_sde with cfg and interval; counted NFE per image."""
    from evalkit.cli import main

    suite = tmp_path / "flow.yaml"
    suite.write_text(
        "name: f\nmodels: [{name: f, adapter: zoo, options: {model: mnist-flow}}]\n"
        "samplers: [flow_euler, flow_heun, flow_dpmpp_2m, flow_euler_sde]\nsteps: [4, 16]\nguidance: [3]\n"
        "guidance_method: [cfg, interval]\nonly: [{guidance_method: cfg}, {sampler: flow_euler, steps: 16}]\n"
        "samples: 4\nbatch_size: 4\nconditions: {classes: 10}\nmetrics: [throughput]\ntiming: {repeats: 1}\n"
    )
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "-q"]) == 0
    rows = pd.read_parquet(tmp_path / "run" / "results.parquet")
    nfe = rows.query("metric == 'nfe'").set_index("cell_id")["value"]
    assert nfe["f__flow_euler__s16__g3"] == 32 and nfe["f__flow_heun__s4__g3"] == 14
    assert nfe["f__flow_dpmpp_2m__s4__g3"] == 8 and nfe["f__flow_euler_sde__s16__g3"] == 32
    assert 16 < nfe["f__flow_euler__s16__g3__interval"] < 32  # σ/(1 − σ) in [0.28, 5.42] only


def test_a_flow_sampler_on_the_eps_model_is_refused_before_anything_runs(tmp_path, capsys):
    from evalkit.cli import main

    suite = tmp_path / "bad.yaml"
    suite.write_text(
        "name: b\nmodels: [{name: m, adapter: zoo}]\nsamplers: [flow_euler]\nsteps: [4]\nguidance: [3]\n"
        "samples: 4\nconditions: {classes: 10}\nmetrics: [throughput]\n"
    )
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "sampler flow_euler does not apply to model m (family eps)" in err and "ddim" in err
    assert not (tmp_path / "run").exists()


def test_distilled_guidance_is_refused_on_the_zoo_models_before_anything_runs(tmp_path, capsys, untrained):
    """The zoo models have no guidance embedding: `distilled` would leave the scale unused."""
    from evalkit.cli import main

    suite = tmp_path / "distilled.yaml"
    suite.write_text(
        "name: d\nmodels: [{name: f, adapter: zoo, options: {model: mnist-flow}}]\nsamplers: [flow_euler]\n"
        "steps: [4]\nguidance: [3]\nguidance_method: [cfg, distilled]\nsamples: 4\nconditions: {classes: 10}\n"
        "metrics: [throughput]\n"
    )
    assert main(["run", str(suite), "--out", str(tmp_path / "run"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "guidance_method 'distilled' does not apply to model f" in err and "cfg, cfg_rescale" in err
    with pytest.raises(ConfigError, match="guidance_method 'distilled' does not apply to model mnist-flow"):
        next(untrained.generate(_request(2, 2, "distilled")))
