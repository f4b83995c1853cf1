"""Image-conditioned tasks through the diffusers adapter, on tiny random-weight pipelines saved and loaded by path.

The references are diffusers' own: the scheduler's timesteps cut by the img2img rule (``get_timesteps``) for the
counted model calls, and the task pipelines called directly with the same generators and scheduler for the images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tiny_pipelines
import tiny_task_pipelines
import torch

from evalkit.errors import ConfigError
from evalkit.generate import GenerationRequest, build_adapter
from evalkit.generate.seeding import sample_generators

PROMPTS = ["a red bus on a bridge", "two cats on a sofa", "a bowl of fruit"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("task_pipelines")
    return {
        "sd": tiny_pipelines.sd(root / "sd"),
        "controlnet": tiny_task_pipelines.controlnet(root / "controlnet"),
        "upscale": tiny_task_pipelines.upscaler(root / "upscale"),
        "edit": tiny_task_pipelines.instruct_pix2pix(root / "edit"),
    }


@pytest.fixture(scope="module")
def sd_adapter(folders):
    """The text-to-image SD pipeline with a ControlNet option: it runs img2img, inpaint and controlnet."""
    return build_adapter("diffusers", path=str(folders["sd"]), controlnet=str(folders["controlnet"]))


@pytest.fixture(scope="module")
def inputs() -> dict[str, torch.Tensor]:
    """Smooth random 16×16 sources (a 4×4 grid upsampled), masks over the right half, 8×8 low-resolution inputs."""
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(3, 3, 4, 4, generator=g)
    images = (torch.nn.functional.interpolate(coarse, size=16, mode="bilinear") * 255).round().to(torch.uint8)
    masks = torch.zeros(3, 1, 16, 16, dtype=torch.uint8)
    masks[..., 8:] = 1
    low = (torch.nn.functional.interpolate(coarse, size=8, mode="bilinear") * 255).round().to(torch.uint8)
    return {"images": images, "masks": masks, "control": images, "low": low}


def _request(task: str | None, inputs, *, sampler: str = "ddim", steps: int = 4, batch_size: int = 3, **kw):
    fields = {"images": inputs["images"], "masks": inputs["masks"], "control": inputs["control"]}
    if task == "upscale":
        fields["control"] = inputs["low"]
    return GenerationRequest(
        indices=np.arange(3),
        seed=7,
        sampler=sampler,
        steps=steps,
        guidance=3.0,
        batch_size=batch_size,
        prompts=PROMPTS,
        task=task,
        **{**fields, **kw},
    )


def _generate(adapter, request: GenerationRequest) -> tuple[torch.Tensor, list]:
    batches = list(adapter.generate(request))
    return torch.cat([b.images for b in batches]), batches


def _unit(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(images, dtype=np.float64)).permute(0, 3, 1, 2)


@pytest.mark.parametrize(("sampler", "strength"), [("ddim", 0.5), ("ddim", 1.0), ("heun", 0.5)])
def test_img2img_model_calls_are_the_schedulers_cut_timesteps(sd_adapter, inputs, sampler, strength):
    """img2img at strength s walks the last ⌊20·s⌋ of 20 steps: counted on the UNet, × 2 images under CFG."""
    import diffusers

    from evalkit.generate.samplers import get_sampler

    scheduler = getattr(diffusers, get_sampler(sampler).scheduler).from_config(sd_adapter.scheduler_config())
    scheduler.set_timesteps(20)
    init = min(int(20 * strength), 20)  # diffusers' get_timesteps, written out
    expected = len(scheduler.timesteps[(20 - init) * scheduler.order :])
    req = _request("img2img", inputs, sampler=sampler, steps=20, strength=strength)
    (batch,) = list(sd_adapter.generate(req))
    print(f"[agreement] img2img {sampler} strength {strength}: counted {batch.model_calls}, scheduler {expected}")
    assert batch.model_calls == expected and batch.nfe == 2 * expected
    assert expected == {("ddim", 0.5): 10, ("ddim", 1.0): 20, ("heun", 0.5): 19}[(sampler, strength)]
    assert sd_adapter.expected_model_calls(sampler, 20, {}, task="img2img", strength=strength) == expected
    assert batch.schedule["first_timestep_index"] == len(scheduler.timesteps) - expected


@pytest.mark.parametrize(
    ("task", "extra", "size"),
    [
        ("img2img", {"strength": 0.6}, 16),
        ("inpaint", {"strength": 1.0}, 16),
        ("controlnet", {"controlnet_scale": 1.0}, 16),
        ("upscale", {}, 32),
    ],
)
def test_each_task_generates_with_two_samplers(sd_adapter, folders, inputs, task, extra, size):
    adapter = build_adapter("diffusers", path=str(folders["upscale"])) if task == "upscale" else sd_adapter
    for sampler in ("ddim", "euler"):
        images, batches = _generate(adapter, _request(task, inputs, sampler=sampler, batch_size=3, **extra))
        assert images.shape == (3, 3, size, size) and images.dtype == torch.uint8
        assert images.float().std() > 1  # not blank (NaN would have raised before the conversion)
        assert list(batches[0].indices) == [0, 1, 2] and batches[0].nfe == 2 * batches[0].model_calls
        if task in ("img2img", "inpaint"):  # sample i depends on (seed, i) only, not on the batch it is in
            twos, parts = _generate(adapter, _request(task, inputs, sampler=sampler, batch_size=2, **extra))
            diff = (twos.int() - images.int()).abs().max().item()
            print(f"[agreement] {task} {sampler}: batch 2 vs 3 max |Δ| = {diff}/255")
            assert len(parts) == 2 and diff <= 1
        if task == "controlnet":  # one ControlNet call per UNet call, counted on the ControlNet itself
            assert batches[0].schedule["controlnet_calls"] == batches[0].model_calls == 4


@pytest.mark.parametrize(
    ("task", "sampler", "cls_name"),
    [
        ("img2img", "ddim", "StableDiffusionImg2ImgPipeline"),
        ("img2img", "euler_a", "StableDiffusionImg2ImgPipeline"),
        ("inpaint", "ddim", "StableDiffusionInpaintPipeline"),
        ("upscale", "ddim", "StableDiffusionUpscalePipeline"),
    ],
)
def test_the_adapter_adds_nothing_to_diffusers_task_pipeline(sd_adapter, folders, inputs, task, sampler, cls_name):
    """The adapter's images equal diffusers' task pipeline called directly with the same generators and scheduler."""
    import diffusers

    from evalkit.generate.samplers import get_sampler

    folder = folders["upscale" if task == "upscale" else "sd"]
    adapter = build_adapter("diffusers", path=str(folder)) if task == "upscale" else sd_adapter
    strength = {"img2img": 0.6, "inpaint": 0.75}.get(task)
    ours, _ = _generate(adapter, _request(task, inputs, sampler=sampler, steps=5, batch_size=2, strength=strength))

    pipe = getattr(diffusers, cls_name).from_pretrained(folder, local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = getattr(diffusers, get_sampler(sampler).scheduler).from_config(pipe.scheduler.config)
    source = inputs["low" if task == "upscale" else "images"].float() / 255
    kw = {"strength": strength} if strength is not None else {}
    if task == "inpaint":
        kw["mask_image"] = inputs["masks"].float()
    ref = pipe(
        prompt=PROMPTS,
        image=source,
        num_inference_steps=5,
        guidance_scale=3.0,
        generator=sample_generators(7, range(3)),
        output_type="np",
        **kw,
    ).images
    diff = (ours.double() / 255 - _unit(ref)).abs().max().item()
    print(f"[agreement] {task} {sampler} vs diffusers {cls_name}: max |Δ| = {diff * 255:.3f}/255")
    assert ours.shape == _unit(ref).shape and diff <= 1 / 255


def test_controlnet_at_scale_zero_is_the_text_to_image_image(sd_adapter, inputs):
    """The ControlNet's residuals are scaled by controlnet_scale: at 0 the task pipeline is the text path itself."""
    text, _ = _generate(sd_adapter, _request(None, inputs))
    zero, _ = _generate(sd_adapter, _request("controlnet", inputs, controlnet_scale=0.0))
    full, _ = _generate(sd_adapter, _request("controlnet", inputs, controlnet_scale=1.0))
    diff = (zero.int() - text.int()).abs().max().item()
    print(f"[agreement] controlnet scale 0 vs text-to-image: max |Δ| = {diff}/255")
    assert diff <= 1 and (full.int() - text.int()).abs().max().item() > 1


def test_edit_runs_instruct_pix2pix_with_its_image_guidance(folders, inputs):
    """InstructPix2Pix guides on text and image: each UNet call carries three images per sample under guidance > 1."""
    adapter = build_adapter("diffusers", path=str(folders["edit"]), image_guidance_scale=1.5)
    assert adapter.tasks == ("edit",)
    images, batches = _generate(adapter, _request("edit", inputs, sampler="euler_a", steps=3))
    assert images.shape == (3, 3, 16, 16) and (batches[0].model_calls, batches[0].nfe) == (3, 9)
    assert adapter.info()["image_guidance_scale"] == 1.5


def test_tasks_and_refusals_name_what_the_model_runs(folders, inputs):
    plain = build_adapter("diffusers", path=str(folders["sd"]))
    assert plain.tasks == ("img2img", "inpaint")
    with pytest.raises(ConfigError, match=r"does not run task 'controlnet'; tasks it runs: img2img, inpaint$"):
        list(plain.generate(_request("controlnet", inputs, controlnet_scale=1.0)))
    with pytest.raises(ConfigError, match=r"does not run task 'upscale'; tasks it runs: img2img, inpaint$"):
        list(plain.generate(_request("upscale", inputs)))
    assert plain.pipeline is None  # refused from the config files, before loading any weights
    with pytest.raises(ConfigError, match=r"task inpaint needs conditions.masks"):
        list(plain.generate(_request("inpaint", inputs, masks=None)))

    upscaler = build_adapter("diffusers", path=str(folders["upscale"]), noise_level=30)
    assert upscaler.tasks == ("upscale",) and upscaler.info()["tasks"] == ["upscale"]
    with pytest.raises(ConfigError, match=r"takes no strength \(got 0.5\).*model option noise_level"):
        list(upscaler.generate(_request("upscale", inputs, strength=0.5)))
    with pytest.raises(ConfigError, match=r"is a StableDiffusionUpscalePipeline: it runs task upscale only"):
        list(upscaler.generate(_request(None, inputs)))
    with pytest.raises(ConfigError, match=r"'noise_level': expected an integer >= 0; got -1"):
        build_adapter("diffusers", path=str(folders["upscale"]), noise_level=-1)
