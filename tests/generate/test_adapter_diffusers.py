"""The diffusers adapter on tiny random-weight pipelines built from configs (no hub access).

A text-to-image pipeline (UNet2DConditionModel + AutoencoderKL + CLIPTextModel + a CLIPTokenizer whose
vocabulary is the BPE table open_clip ships in its wheel), the built-in MNIST UNet saved as a
class-conditional DDPMPipeline, and a tiny DiT are saved with ``save_pretrained`` and loaded back
through ``options: {path: ...}``, as a user's downloaded pipeline would be.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from evalkit.cli import main
from evalkit.generate import GenerationRequest, build_adapter
from evalkit.generate.diffusers_adapter import DiffusersError
from evalkit.generate.samplers import model_calls_per_sample
from evalkit.run.runner import Runner
from evalkit.store import RunStore
from evalkit.suite import load_suite

PROMPTS = ["a red bus on a bridge", "two cats on a sofa", "a bowl of fruit", "a lighthouse at night"]
# Stable Diffusion 1.5's own scheduler config: the training schedule the samplers are built on
SD_SCHEDULE = {
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "skip_prk_steps": True,
    "steps_offset": 1,
    "set_alpha_to_one": False,
}


def clip_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """vocab.json + merges.txt in Hugging Face's CLIP layout, from the BPE table shipped in open_clip's wheel."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # as open_clip's SimpleTokenizer reads it
    base = list(bytes_to_unicode().values())
    vocab = base + [v + "</w>" for v in base] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return folder / "vocab.json", folder / "merges.txt"


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Stable-Diffusion-shaped pipeline with random weights: 16×16 images from 8×8×4 latents."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline
    from tiny_pipelines import sd_unet
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("tiny_sd")
    unet = sd_unet()  # seeds torch with 0 first, as before: the same weights, and the same RNG stream after it
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4,
        sample_size=16,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    vocab, merges = clip_tokenizer_files(root / "bpe")
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler(**SD_SCHEDULE),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(root / "pipeline")
    return root / "pipeline"


@pytest.fixture(scope="module")
def sd_adapter(tiny_sd: Path):
    """One loaded adapter shared by the tests that call it directly (loading costs seconds on 2 cores)."""
    return build_adapter("diffusers", path=str(tiny_sd))


def _request(
    sampler: str,
    batch_size: int,
    *,
    n: int = 3,
    steps: int = 2,
    guidance: float = 3.0,
    prompts: list[str] | None = None,
    labels: np.ndarray | None = None,
) -> GenerationRequest:
    return GenerationRequest(
        indices=np.arange(n),
        seed=7,
        sampler=sampler,
        steps=steps,
        guidance=guidance,
        batch_size=batch_size,
        prompts=prompts,
        labels=labels,
    )


def _images(adapter, req: GenerationRequest) -> torch.Tensor:
    return torch.cat([b.images for b in adapter.generate(req)])


SUITE = """\
name: tiny-t2i
models: [{{name: tiny, adapter: diffusers, options: {{path: "{path}", negative_prompt: "blurry"}}}}]
samplers: [ddim, heun, euler_a]
steps: [2, 3]
guidance: [1, 3]
samples: 4
batch_size: 4
conditions: {{prompts: {prompts}}}
metrics: [throughput]
grid_samples: 4
"""


def test_sampler_grid_through_the_runner_counts_model_calls(tiny_sd, tmp_path, capsys):
    suite_file = tmp_path / "t2i.yaml"
    suite_file.write_text(SUITE.format(path=tiny_sd, prompts=json.dumps(PROMPTS)))
    out = tmp_path / "run"
    summary = Runner(load_suite(suite_file), out, device="cpu").run()
    assert summary.exit_code == 0 and len(summary.done) == 12, summary.failed
    df = pd.read_parquet(out / "results.parquet")
    calls = df[df.metric == "model_calls"].set_index(["sampler", "steps", "guidance"])["value"]
    nfe = df[df.metric == "nfe"].set_index(["sampler", "steps", "guidance"])["value"]
    assert len(calls) == 12
    for (sampler, steps, g), counted in calls.items():
        expected = model_calls_per_sample(sampler, steps, SD_SCHEDULE)  # the scheduler's timesteps
        assert counted == expected, (sampler, steps, g)
        assert nfe[(sampler, steps, g)] == counted * (2 if g > 1 else 1)
    assert calls[("heun", 3, 3.0)] == 5  # 2·steps − 1: counted, not assumed to equal steps
    samples = RunStore(out).load_samples("tiny__ddim__s2__g3")
    assert samples["images"].shape == (4, 3, 16, 16) and samples["images"].dtype == np.uint8
    assert list(samples["prompts"]) == PROMPTS
    info = json.loads((out / "run.json").read_text())["models"]["tiny"]
    assert info["pipeline"] == "StableDiffusionPipeline" and info["mode"] == "text-to-image"
    assert info["base_scheduler"] == "PNDMScheduler" and info["negative_prompt"] == "blurry"
    # the dry run plans the same counts from the scheduler config alone
    capsys.readouterr()
    assert main(["run", str(suite_file), "--out", str(tmp_path / "dry"), "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert "tiny__heun__s3__g3 " in plan and "model calls/sample    5" in plan and "note:" not in plan


@pytest.mark.parametrize("sampler", ["ddim", "euler_a"])
def test_images_do_not_depend_on_batch_size(sd_adapter, sampler):
    one, three = (_images(sd_adapter, _request(sampler, bs, prompts=PROMPTS[:3])) for bs in (1, 3))
    assert one.shape == (3, 3, 16, 16) and one.dtype == torch.uint8
    assert (one.int() - three.int()).abs().max().item() <= 1
    assert one.float().std() > 5  # not a blank image


def test_incompatible_scheduler_lists_the_compatible_samplers(tiny_sd, tmp_path, monkeypatch, capsys):
    from diffusers import FlowMatchEulerDiscreteScheduler

    folder = tmp_path / "flow"
    shutil.copytree(tiny_sd, folder)
    FlowMatchEulerDiscreteScheduler().save_pretrained(folder / "scheduler")
    adapter = build_adapter("diffusers", path=str(folder))
    with pytest.raises(
        DiffusersError,
        match=r"sampler ddim does not apply to model '.*flow' \(family flow\); samplers that do: "
        r"flow_dpmpp_2m, flow_euler, flow_euler_sde, flow_heun, flow_lcm, flow_unipc, native$",
    ):
        list(adapter.generate(_request("ddim", 2, prompts=PROMPTS[:3])))
    assert adapter.pipeline is None  # refused before loading any weights
    suite_file = tmp_path / "flow.yaml"
    suite_file.write_text(SUITE.format(path=folder, prompts=json.dumps(PROMPTS)))
    assert main(["run", str(suite_file), "--out", str(tmp_path / "dry"), "--dry-run"]) == 2
    captured = capsys.readouterr()
    assert "sampler heun does not apply to model" in " ".join((captured.out + captured.err).split())


def test_offline_hub_id_is_a_clear_error_and_dry_run_still_plans(tmp_path, capsys):
    adapter = build_adapter("diffusers", path="evalkit-tests/no-such-pipeline")
    with pytest.raises(
        DiffusersError,
        match=r"'evalkit-tests/no-such-pipeline': no such local folder, and as a hub "
        r"id it is not in the Hugging Face cache .*HF_HUB_OFFLINE=1.*"
        r"hf download evalkit-tests/no-such-pipeline.*local folder",
    ):
        adapter.load()
    suite_file = tmp_path / "hub.yaml"
    suite_file.write_text(SUITE.format(path="evalkit-tests/no-such-pipeline", prompts="builtin:evalkit-200"))
    assert main(["run", str(suite_file), "--out", str(tmp_path / "dry"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "12 cells × 4 samples" in out and "model calls/sample    ?" in out
    assert "note: model tiny: model calls unknown: the weights of 'evalkit-tests/no-such-pipeline' are not here" in out
    # a real run fails each cell with the same message (exit 1), no traceback on the console
    assert main(["run", str(suite_file), "--out", str(tmp_path / "run"), "-q"]) == 1
    assert "hf download evalkit-tests/no-such-pipeline" in capsys.readouterr().err


def test_mnist_unet_as_a_class_conditional_pipeline_matches_the_zoo_adapter(tmp_path):
    """The built-in model saved as a diffusers DDPMPipeline gives the zoo adapter's images (evalkit's loop)."""
    from diffusers import DDPMPipeline, DDPMScheduler

    from evalkit import zoo
    from evalkit.generate.zoo_adapter import ZooMnistAdapter

    unet, schedule = zoo.load_mnist_unet(trained=True)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler.from_config(schedule)).save_pretrained(tmp_path / "mnist")
    # the scheduler file as a hand-written config holds it: only the training schedule, samplers keep their defaults
    (tmp_path / "mnist" / "scheduler" / "scheduler_config.json").write_text(
        json.dumps({"_class_name": "DDPMScheduler", **schedule})
    )
    adapter = build_adapter("diffusers", path=str(tmp_path / "mnist"), null_class=zoo.NULL_CLASS)
    labels = np.arange(4) % 10
    for sampler in ("ddim", "euler"):
        req = _request(sampler, 4, n=4, steps=4, guidance=3.0, labels=labels)
        batches = list(adapter.generate(req))
        assert (batches[0].model_calls, batches[0].nfe) == (4, 8)
        ours, zoo_images = torch.cat([b.images for b in batches]), _images(ZooMnistAdapter(), req)
        assert (ours.int() - zoo_images.int()).abs().max().item() <= 1, sampler
    assert adapter.info()["mode"] == "class-conditional"


def test_dit_and_unconditional_pipelines(tmp_path):
    from diffusers import AutoencoderKL, DDIMScheduler, DDPMPipeline, DiTPipeline, DiTTransformer2DModel, UNet2DModel

    torch.manual_seed(0)
    dit = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=1,
        sample_size=4,
        patch_size=2,
        num_embeds_ada_norm=10,
    )
    vae = AutoencoderKL(
        latent_channels=4,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    DiTPipeline(transformer=dit, vae=vae, scheduler=DDIMScheduler()).save_pretrained(tmp_path / "dit")
    adapter = build_adapter("diffusers", path=str(tmp_path / "dit"))
    req = _request("dpmpp_2m", 3, n=3, steps=3, guidance=4.0, labels=np.array([1, 5, 9]))
    batch = next(iter(adapter.generate(req)))
    assert batch.images.shape == (3, 3, 8, 8) and (batch.model_calls, batch.nfe) == (3, 6)
    req.batch_size = 1
    assert (_images(adapter, req).int() - batch.images.int()).abs().max().item() <= 1
    assert adapter.info()["mode"] == "class-conditional"

    unet = UNet2DModel(
        sample_size=8,
        in_channels=3,
        out_channels=3,
        layers_per_block=1,
        block_out_channels=(8, 16),
        norm_num_groups=4,
        down_block_types=("DownBlock2D",) * 2,
        up_block_types=("UpBlock2D",) * 2,
    )
    DDPMPipeline(unet=unet, scheduler=DDIMScheduler()).save_pretrained(tmp_path / "uncond")
    adapter = build_adapter("diffusers", path=str(tmp_path / "uncond"))
    batch = next(iter(adapter.generate(_request("heun", 2, n=2, steps=3, guidance=1.0))))
    assert batch.images.shape == (2, 3, 8, 8) and (batch.model_calls, batch.nfe) == (5, 5)
    assert adapter.info()["mode"] == "unconditional"
    with pytest.raises(DiffusersError, match="unconditional: guidance must be 1"):
        list(adapter.generate(_request("ddim", 2, guidance=3.0)))


def test_options_are_checked_and_recorded():
    with pytest.raises(DiffusersError, match="set options.path"):
        build_adapter("diffusers")
    with pytest.raises(DiffusersError, match="'dtype': expected one of fp32, fp16, bf16; got 'fp8'"):
        build_adapter("diffusers", path="x", dtype="fp8")
    info = build_adapter("diffusers", path="x", dtype="bf16", compile=True, attention="sdpa").info()
    assert (info["dtype"], info["compile"], info["attention"]) == ("bf16", True, "sdpa")


def test_the_pipelines_own_loop_reports_the_schedule_it_walked(sd_adapter):
    """A text-to-image pipeline runs its own loop on evalkit's scheduler: the batch carries the timesteps that
    loop walked. Stable Diffusion's config (steps_offset 1) under DDIM's default leading spacing starts at 751
    at 4 steps, a quarter of the noise range below the last training step; trailing starts at 999."""
    cases = {None: [751, 501, 251, 1], "trailing": [999, 749, 499, 249]}
    for spacing, expected in cases.items():
        req = _request("ddim", 2, n=2, steps=4, prompts=PROMPTS[:2])
        if spacing:
            req.sampler_options = {"timestep_spacing": spacing}
        (batch,) = list(sd_adapter.generate(req))
        sch = batch.schedule
        assert sch["timesteps"] == expected and sch["timestep_spacing"] == (spacing or "leading")
        assert batch.model_calls == len(sch["timesteps"])  # one (CFG-batched) call per recorded timestep
        assert (
            sch["scheduler"] == "DDIMScheduler" and len(sch["sigmas"]) == 4 and sch["sigmas_from"] == "alphas_cumprod"
        )
