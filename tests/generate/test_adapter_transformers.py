"""Transformer and distilled pipelines through the diffusers adapter: SD3, Flux (dev- and schnell-shaped), PixArt-Σ,
Sana and a latent consistency model, each a tiny random-weight pipeline built offline (:mod:`tiny_pipelines`),
saved, and run through ``evalkit run`` with a sampler grid.

What is checked is what a user relies on: images do not depend on the batch size (per-sample generators and
latents, also for stochastic samplers in loops that pass the scheduler no generator); model calls are counted
and equal the timesteps the scheduler walked (× 2 images per call under batched CFG; Flux-dev's distilled guidance
costs one call per step); the sampler swap keeps the pipeline's flow shift and resolution-dependent shift; and
samplers or guidance methods a pipeline cannot run are refused with the names that fit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tiny_pipelines
import torch

from evalkit.cli import main
from evalkit.generate import GenerationRequest, build_adapter
from evalkit.generate.diffusers_adapter import DiffusersError
from evalkit.store import RunStore

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["a red bus on the bridge", "two cats on a sofa", "a bowl of fruit", "a lighthouse at night"]
SIXTEEN = {"height": 16, "width": 16}  # Flux's default is 128 latent tokens a side: far too big here


def options(name: str) -> dict[str, int]:
    """The adapter options of tiny pipeline ``name``: the others' size comes from their transformer config."""
    return SIXTEEN if name.startswith("flux") else {}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="session")
def pipes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_transformers")
    return {
        "sd3": tiny_pipelines.sd3(root / "sd3"),
        "flux": tiny_pipelines.flux(root / "flux"),
        "flux_schnell": tiny_pipelines.flux(root / "flux_schnell", guidance_embeds=False),
        "pixart_sigma": tiny_pipelines.pixart_sigma(root / "pixart_sigma"),
        "sana": tiny_pipelines.sana(root / "sana"),
        "lcm": tiny_pipelines.lcm(root / "lcm"),
    }


@dataclass(frozen=True)
class Case:
    samplers: list[str]
    steps: list[int]
    guidance: float
    method: str
    images_per_call: int  # 2: the pipeline batches the unconditional prediction with the conditional one
    options: dict[str, Any] = field(default_factory=dict)


CASES = {
    # flow_euler_sde is stochastic: SD3's loop passes its step no generator, evalkit's per-sample ones go in
    "sd3": Case(["flow_euler", "flow_dpmpp_2m", "flow_euler_sde"], [2, 3], 3.0, "cfg", 2),
    "flux": Case(["flow_euler", "flow_unipc"], [2, 3], 3.5, "distilled", 1, SIXTEEN),
    "pixart_sigma": Case(["dpmpp_2m", "ddim"], [2, 3], 3.0, "cfg", 2),
    "sana": Case(["flow_dpmpp_2m", "flow_euler"], [2, 3], 3.0, "cfg", 2),
    "lcm": Case(["lcm", "native"], [2, 4], 8.5, "distilled", 1),  # LCMScheduler: stochastic, per-sample noise
}


def _suite(path: Path, case: Case, batch_size: int) -> str:
    doc = {
        "name": "tiny-transformer",
        "models": [{"name": "tiny", "adapter": "diffusers", "options": {"path": str(path), **case.options}}],
        "samplers": case.samplers,
        "steps": case.steps,
        "guidance": [case.guidance],
        "guidance_method": [case.method],
        "samples": 8,
        "batch_size": batch_size,
        "seed": 3,
        "conditions": {"prompts": PROMPTS, "per_prompt": 2},
        "metrics": ["throughput"],
        "grid_samples": 8,
        "timing": {"repeats": 1, "warmup": 0},  # no batches generated for timing alone
    }
    return json.dumps(doc)  # JSON is YAML


def _run(tmp_path: Path, path: Path, case: Case, batch_size: int) -> dict[str, dict[str, Any]]:
    """Run the suite through the CLI; {cell_id: (cell record, stored images)}."""
    suite = tmp_path / f"bs{batch_size}.yaml"
    suite.write_text(_suite(path, case, batch_size))
    out = tmp_path / f"run{batch_size}"
    assert main(["run", str(suite), "--out", str(out), "-q", "--device", "cpu"]) == 0
    store = RunStore(out)
    cells = {r["cell_id"]: r for r in store.iter_cells()}
    assert len(cells) == len(case.samplers) * len(case.steps)
    return {cid: {**rec, "images": store.load_samples(cid)["images"]} for cid, rec in cells.items()}


@pytest.mark.parametrize("name", list(CASES))
def test_sampler_grid_is_batch_size_invariant_and_counts_the_model_calls(pipes, tmp_path, name):
    case, path = CASES[name], pipes[name]
    three, eight = (_run(tmp_path, path, case, bs) for bs in (3, 8))
    plan = build_adapter("diffusers", path=str(path), **case.options)  # the --dry-run estimate, from configs
    for cid, cell in eight.items():
        a, b = three[cid]["images"].astype(int), cell["images"].astype(int)
        assert a.shape == b.shape == (8, 3, *a.shape[-2:]) and a.shape[-1] >= 16
        assert (np.abs(a - b) <= 1).mean() >= 0.999, cid  # equal to 1/255 on ≥ 99.9 % of the pixels
        assert b.std() > 5, cid  # not a blank image
        walked = len(cell["schedule"]["timesteps"])
        assert cell["model_calls"] == walked == plan.expected_model_calls(cell["sampler_name"], cell["steps"], {})
        assert cell["nfe"] == walked * case.images_per_call, cid
        assert cell["model_info"]["pipeline"] == type_name(path)
    if case.method == "distilled" and name == "flux":  # FLUX.1-dev's embedded guidance: one call per step
        assert all(c["nfe"] == c["model_calls"] == c["steps"] for c in eight.values())


def type_name(path: Path) -> str:
    return json.loads((path / "model_index.json").read_text())["_class_name"]


def _request(sampler: str, *, steps: int = 2, guidance: float = 3.0, method: str = "cfg", n: int = 2):
    return GenerationRequest(
        indices=np.arange(n),
        seed=5,
        sampler=sampler,
        steps=steps,
        guidance=guidance,
        batch_size=n,
        prompts=(PROMPTS * 2)[:n],
        guidance_method=method,
    )


def test_flux_true_cfg_without_a_guidance_embedding_costs_two_calls_per_step(pipes):
    """A FLUX.1-schnell-shaped model (no guidance embedding): cfg is FluxPipeline's true CFG, two calls per step
    (not batched: two calls of the batch's images each); at guidance 1 it is off, and 'distilled' is refused."""
    adapter = build_adapter("diffusers", path=str(pipes["flux_schnell"]), **SIXTEEN)
    on, off = (next(iter(adapter.generate(_request("flow_euler", steps=3, guidance=g)))) for g in (3.0, 1.0))
    assert (on.model_calls, on.nfe) == (6, 6) and (off.model_calls, off.nfe) == (3, 3)
    assert (on.images.int() - off.images.int()).abs().max() > 0  # the guidance did something
    with pytest.raises(DiffusersError, match=r"guidance_method 'distilled' does not apply to model '.*flux_schnell'"):
        list(adapter.generate(_request("flow_euler", method="distilled")))


def test_guidance_methods_a_pipeline_cannot_take_are_refused_before_loading(pipes):
    cases = [
        ("flux", "cfg", r"'cfg' does not apply to model '.*flux' \(FluxPipeline\).*use 'distilled'.*distilled, none"),
        ("lcm", "cfg", r"'cfg' does not apply to model '.*lcm' \(LatentConsistencyModelPipeline\).*distilled, none"),
        ("sd3", "distilled", r"guidance_method 'distilled' does not apply to model '.*sd3' \(StableDiffusion3Pipeline"),
        ("pixart_sigma", "apg", r"'apg' does not apply .*PixArtSigmaPipeline.*cfg, none.*runs its own loop"),
    ]
    for name, method, message in cases:
        adapter = build_adapter("diffusers", path=str(pipes[name]), **options(name))
        sampler = "lcm" if name == "lcm" else "flow_euler" if name != "pixart_sigma" else "ddim"
        with pytest.raises(DiffusersError, match=message):
            list(adapter.generate(_request(sampler, method=method)))
        assert adapter.pipeline is None, name  # from the config files: refused in seconds


def test_each_pipeline_gets_the_guidance_keywords_of_its_own_loop():
    """What the adapter passes to a pipeline per guidance method, read from its class and denoiser config."""
    from evalkit.generate.diffusers_pipelines import PipelineSpec, guidance_kwargs

    sd = PipelineSpec.of("StableDiffusionPipeline", {"time_cond_proj_dim": None})
    dev, schnell = (PipelineSpec.of("FluxPipeline", {"guidance_embeds": e}) for e in (True, False))
    lcm = PipelineSpec.of("LatentConsistencyModelPipeline", {"time_cond_proj_dim": 256})
    cases = [
        (sd, "cfg_rescale", {"phi": 0.5}, {"guidance_scale": 5.0, "guidance_rescale": 0.5, "negative_prompt": "blur"}),
        (sd, "none", {}, {"guidance_scale": 1.0}),  # one conditional call; the negative prompt is unused
        (dev, "distilled", {}, {"guidance_scale": 5.0}),  # the embedding's input: no true_cfg_scale
        (schnell, "cfg", {}, {"true_cfg_scale": 5.0, "negative_prompt": "blur"}),
        (lcm, "distilled", {}, {"guidance_scale": 5.0}),  # LCM feeds w - 1 to its w-embedding itself
        (lcm, "none", {}, {"guidance_scale": 1.0}),
    ]
    for spec, method, opts, expected in cases:
        assert guidance_kwargs(spec, method, 5.0, opts, "blur", "'m'") == expected, (spec.name, method)
    assert guidance_kwargs(schnell, "cfg", 5.0, {}, None, "'m'")["negative_prompt"] == ""  # true CFG needs one
    assert (sd.embedding, dev.embedding, schnell.embedding, lcm.embedding) == (
        None,
        "guidance_embeds",
        None,
        "time_cond_proj_dim",
    )
    with pytest.raises(DiffusersError, match=r"'cfg_rescale' does not apply to model 'm' \(FluxPipeline\)"):
        guidance_kwargs(schnell, "cfg_rescale", 5.0, {"phi": 0.7}, None, "'m'")


def test_samplers_a_pipeline_cannot_run_are_refused_with_those_that_can(pipes):
    flow = "flow_dpmpp_2m, flow_euler, flow_euler_sde, flow_heun, flow_lcm, flow_unipc, native"
    cases = [  # an ε sampler on a flow model, a flow sampler on an ε model, and the pipelines' own limits
        ("sd3", "ddim", rf"sampler ddim does not apply to model '.*sd3' \(family flow\); samplers that do: {flow}$"),
        ("pixart_sigma", "flow_euler", r"sampler flow_euler does not apply to model '.*pixart_sigma' \(family eps\)"),
        (
            "flux",
            "flow_heun",
            r"flow_heun \(FlowMatchHeunDiscreteScheduler\) does not apply to model '.*flux' \(FluxPipeline\): .*"
            r"use_dynamic_shifting.*samplers that do: flow_dpmpp_2m, flow_euler, flow_euler_sde, flow_lcm, "
            r"flow_unipc, native$",
        ),
        ("lcm", "ddim", r"ddim \(DDIMScheduler\) does not apply .*needs LCMScheduler.*samplers that do: lcm, native$"),
    ]
    for name, sampler, message in cases:
        adapter = build_adapter("diffusers", path=str(pipes[name]), **options(name))
        with pytest.raises(DiffusersError, match=message):
            adapter.expected_model_calls(sampler, 4, {})  # --dry-run refuses it as the run does
        with pytest.raises(DiffusersError, match=message):
            list(adapter.generate(_request(sampler, method="distilled" if name in ("flux", "lcm") else "cfg")))
    # flow_heun runs where the schedule is not shifted by resolution (SD3, Sana): two calls per step but the last
    adapter = build_adapter("diffusers", path=str(pipes["sd3"]))
    assert next(iter(adapter.generate(_request("flow_heun", steps=3)))).model_calls == 5


def test_the_sampler_swap_keeps_the_pipelines_flow_shift(pipes):
    """SD3's FlowMatchEuler ``shift: 3`` reaches DPM-Solver as ``flow_shift``; Sana's DPM-Solver ``flow_shift: 3``
    reaches FlowMatchEuler as ``shift``; Flux's dynamic shift gets FluxPipeline's mu for 16 image tokens."""
    from diffusers import DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    def walked(name: str, sampler: str, method: str = "cfg") -> dict[str, Any]:
        adapter = build_adapter("diffusers", path=str(pipes[name]), **options(name))
        return next(iter(adapter.generate(_request(sampler, steps=4, method=method)))).schedule

    def sigmas(scheduler: Any, **kw: Any) -> list[float]:
        scheduler.set_timesteps(4, **kw)
        return scheduler.sigmas.double().tolist()

    flow_dpm = {"use_flow_sigmas": True, "prediction_type": "flow_prediction"}
    sd3 = walked("sd3", "flow_dpmpp_2m")["sigmas"]
    assert sd3 == pytest.approx(sigmas(DPMSolverMultistepScheduler(**flow_dpm, flow_shift=tiny_pipelines.SD3_SHIFT)))
    assert sd3 != pytest.approx(sigmas(DPMSolverMultistepScheduler(**flow_dpm)))  # unshifted: what a plain swap gave
    sana = walked("sana", "flow_euler")["sigmas"]
    assert sana == pytest.approx(sigmas(FlowMatchEulerDiscreteScheduler(shift=tiny_pipelines.SANA_SHIFT)))
    assert sana != pytest.approx(sigmas(FlowMatchEulerDiscreteScheduler()))
    flux = walked("flux", "flow_unipc", "distilled")
    s = tiny_pipelines.FLUX_SCHEDULE
    mu = calculate_shift(16, s["base_image_seq_len"], s["max_image_seq_len"], s["base_shift"], s["max_shift"])
    assert flux["dynamic_shift"]["mu"] == pytest.approx(mu)
    unshifted = np.linspace(1, 1 / 1000, 5)[:-1]
    expected = np.exp(mu) / (np.exp(mu) + (1 / unshifted - 1))  # diffusers' exponential time shift
    assert flux["sigmas"][1:4] == pytest.approx(expected[1:4])  # (the first is nudged below 1 by UniPC)


@pytest.mark.parametrize("name", ["sd3", "flux"])
def test_bf16_runs_the_denoiser_in_bf16(pipes, name):
    """``dtype: bf16`` reaches the transformer (diffusers 0.42 without accelerate leaves SD3's in fp32, and its
    first layer then refuses bf16 latents) and the images stay close to fp32's."""
    method = "distilled" if name == "flux" else "cfg"
    images = {}
    for dtype in ("fp32", "bf16"):
        adapter = build_adapter("diffusers", path=str(pipes[name]), dtype=dtype, **options(name))
        images[dtype] = next(iter(adapter.generate(_request("flow_euler", method=method)))).images.float()
        assert adapter.denoiser.dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
        assert adapter.info()["dtype"] == dtype
    assert (images["bf16"] - images["fp32"]).abs().mean() < 3  # of 255 (image std ~44): the same images in bf16


@pytest.fixture
def machine_without_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder for the shipped suites on a machine that has evalkit's own data (the FID/CLIP weights, stubbed as
    found, and the COCO reference folder the suites name) but not the diffusion model: an empty Hugging Face cache.
    """
    from huggingface_hub import constants

    from evalkit.run import preflight

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(preflight, "check_extractor_weights", lambda extractor: [])
    (tmp_path / "suites" / "data" / "coco" / "val2014-1024").mkdir(parents=True)
    return tmp_path / "suites"


@pytest.mark.parametrize(("suite", "model"), [("sd35_coco", "sd35m"), ("flux_coco", "flux_dev")])
def test_shipped_transformer_suites_dry_run_offline(suite, model, tmp_path, capsys, machine_without_the_model):
    copy = machine_without_the_model / f"{suite}.yaml"
    copy.write_text((ROOT / "suites" / f"{suite}.yaml").read_text())
    assert main(["run", str(copy), "--out", str(tmp_path / "dry"), "--dry-run"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "12 cells × 1000 samples" in out and "model calls/sample ?" in out
    assert f"note: model {model}: model calls unknown: the weights of" in out


def test_the_flux_suite_plans_its_calls_on_a_local_pipeline(pipes, tmp_path, capsys, machine_without_the_model):
    """suites/flux_coco.yaml with options.path pointed at a (tiny) local Flux folder: the dry run counts the
    timesteps of every sampler under dynamic shifting, with no note."""
    text = (ROOT / "suites" / "flux_coco.yaml").read_text()
    suite = machine_without_the_model / "flux_local.yaml"
    suite.write_text(text.replace("black-forest-labs/FLUX.1-dev", str(pipes["flux"])))
    assert main(["run", str(suite), "--out", str(tmp_path / "dry"), "--dry-run"]) == 0
    plan = " ".join(capsys.readouterr().out.split())
    assert "note:" not in plan
    assert "flux_dev__flow_unipc__s28__g3.5__distilled model calls/sample 28" in plan
    assert "flux_dev__flow_euler__s50__g2.5__distilled model calls/sample 50" in plan
