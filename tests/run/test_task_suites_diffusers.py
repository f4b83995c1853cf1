"""Tiny random-weight diffusers task pipelines, each through ``evalkit run`` with two samplers: SD img2img and inpaint
(one text-to-image folder), ControlNet (canny control of the sources), the ×4 upscaler (low-resolution control).
The counted model calls follow the strength (diffusers' get_timesteps cut)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from generate import tiny_pipelines, tiny_task_pipelines
from PIL import Image

from evalkit.cli import main
from evalkit.store import read_run

PROMPTS = ["a red bus on a bridge", "two cats on a sofa"]


def _sources(folder: Path, size: int) -> Path:
    """Three smooth random RGB images (a 4×4 grid upsampled), with shapes for the edge detector."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        coarse = Image.fromarray((rng.random((4, 4, 3)) * 255).astype(np.uint8))
        img = np.asarray(coarse.resize((size, size), Image.BILINEAR)).copy()
        img[size // 4 : size // 2, size // 4 : size // 2] = 255  # a bright square: canny finds its edges
        Image.fromarray(img).save(folder / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("task_suites")
    return {
        "sd": tiny_pipelines.sd(root / "sd"),
        "controlnet": tiny_task_pipelines.controlnet(root / "cn"),
        "upscaler": tiny_task_pipelines.upscaler(root / "up"),
        "src16": _sources(root / "src16", 16),
        "src32": _sources(root / "src32", 32),
        "root": root,
    }


def _run(tiny: dict[str, Path], name: str, doc: dict) -> object:
    base = {
        "name": name,
        "samplers": ["ddim", "euler"],
        "steps": [6],
        "guidance": [2.0],
        "samples": 3,
        "batch_size": 3,
        "metrics": [{"name": "psnr", "extractor": "pixels"}, "throughput"],
        "timing": {"repeats": 1, "warmup": 0},
    }
    suite = tiny["root"] / f"{name}.yaml"
    suite.write_text(yaml.safe_dump({**base, **doc}))
    out = tiny["root"] / f"run-{name}"
    assert main(["run", str(suite), "--out", str(out), "-q"]) == 0
    return read_run(out)


def test_img2img_and_inpaint_on_a_text_to_image_pipeline(tiny):
    run = _run(
        tiny,
        "sd-tasks",
        {
            "models": [{"name": "sd", "adapter": "diffusers", "options": {"path": str(tiny["sd"])}}],
            "task": ["img2img", "inpaint"],
            "strength": [0.5, 1.0],
            "conditions": {
                "images": {"path": str(tiny["src16"])},
                "prompts": PROMPTS,
                "masks": {"kind": "centre", "size": 0.5},
            },
        },
    )
    df = run.results
    assert len(df["cell_id"].unique()) == 2 * 2 * 2
    calls = df[df.metric == "model_calls"].set_index("cell_id")["value"]
    # 6 DDIM steps: strength 0.5 walks int(6·0.5) = 3 of them, strength 1 all 6 (counted, not assumed)
    assert calls["sd__ddim__s6__g2__img2img_st0.5"] == 3 and calls["sd__ddim__s6__g2__img2img_st1"] == 6
    nfe = df[df.metric == "nfe"].set_index("cell_id")["value"]
    assert nfe["sd__ddim__s6__g2__img2img_st0.5"] == 6  # both halves of classifier-free guidance
    psnr = df[df.metric == "psnr"]
    assert np.isfinite(psnr["value"]).all() and len(psnr) == 8


def test_controlnet_with_a_canny_control(tiny):
    run = _run(
        tiny,
        "cn",
        {
            "models": [
                {
                    "name": "sd-cn",
                    "adapter": "diffusers",
                    "options": {"path": str(tiny["sd"]), "controlnet": str(tiny["controlnet"])},
                }
            ],
            "task": "controlnet",
            "controlnet_scale": [0.5, 1.0],
            "conditions": {
                "images": {"path": str(tiny["src16"])},
                "prompts": PROMPTS,
                "control": {"detector": "canny"},
            },
            "metrics": [{"name": "control_fidelity", "extractor": "pixels"}, "throughput"],
        },
    )
    df = run.results
    f1 = df[df.metric == "control_f1"]
    assert len(f1) == 4 and f1["value"].between(0, 1).all()
    assert set(df["controlnet_scale"].dropna()) == {0.5, 1.0}
    assert run.task_inputs()["control"].max() == 255  # the sources' square has edges


def test_x4_upscaler_from_a_low_resolution_control(tiny):
    run = _run(
        tiny,
        "up",
        {
            "models": [
                {"name": "up", "adapter": "diffusers", "options": {"path": str(tiny["upscaler"]), "noise_level": 20}}
            ],
            "task": "upscale",
            "conditions": {
                "images": {"path": str(tiny["src32"])},
                "prompts": PROMPTS,
                "control": {"detector": "lowres", "factor": 4},
            },
            "metrics": [
                {"name": "psnr", "extractor": "pixels"},
                {"name": "control_fidelity", "extractor": "pixels"},
                "throughput",
            ],
        },
    )
    df = run.results
    assert set(df.metric) >= {"psnr", "control_psnr"}
    assert np.isfinite(df[df.metric == "control_psnr"]["value"]).all()
    kept = run.samples("up__ddim__s6__g2__upscale")
    assert kept["images"].shape[2:] == (32, 32)  # 8×8 control, ×4
    assert run.cells["up__ddim__s6__g2__upscale"]["model_info"]["mode"] == "image-conditioned: upscale"
