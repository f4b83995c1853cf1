"""Task suites end to end on the built-in MNIST model: every sample's source, mask and control follow its index
(identical for every batch size), rows and records carry the task axis, the run folder keeps the task inputs, and
bad task inputs stop the run with exit 2 before anything is generated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from evalkit.cli import main
from evalkit.store import read_run
from evalkit.zoo import data

SUITE = """
name: tiny-tasks
models: [{name: mnist, adapter: zoo}]
samplers: [ddim, euler]
steps: [8]
guidance: [1.0]
task: [img2img, inpaint, upscale]
strength: [0.5]
samples: 5
seed: 3
conditions:
  images: {dataset: mnist-heldout, samples: 3}
  classes: {offset: 1, count: 10}
  masks: {kind: boxes, count: 1, seed: 7}
  control: {detector: lowres, factor: 2}
metrics:
  - {name: psnr, extractor: pixels}
  - {name: psnr, extractor: pixels, options: {region: masked}}
  - {name: control_fidelity, extractor: pixels}
  - {name: class_acc, extractor: mnist-net}
  - {name: fd, extractor: mnist-net, options: {region: masked}}
grid_samples: 5
timing: {repeats: 1, warmup: 0}
"""


def _run(tmp: Path, batch: int, **changes) -> Path:
    doc = {**yaml.safe_load(SUITE), **changes}
    (tmp / "s.yaml").write_text(yaml.safe_dump(doc))
    out = tmp / f"run{batch}"
    assert main(["run", str(tmp / "s.yaml"), "--out", str(out), "--batch-size", str(batch), "-q"]) == 0
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("tasks")
    return _run(tmp, 2), _run(tmp, 5)


def test_batch_size_changes_nothing(runs):
    a, b = (read_run(r) for r in runs)
    assert sorted(a.cells) == sorted(b.cells) and len(a.cells) == 2 * 3
    for cid in a.cells:
        fa, fb = a.features(cid), b.features(cid)
        np.testing.assert_array_equal(fa["pixels"]["images"], fb["pixels"]["images"], err_msg=cid)  # the images
        # a network's float32 sums may differ in the last bits between batch shapes; the images do not
        np.testing.assert_allclose(fa["mnist-net"]["features"], fb["mnist-net"]["features"], rtol=1e-4, atol=1e-5)
    ta, tb = a.task_inputs(), b.task_inputs()
    inputs = {"images", "masks", "control", "labels"}
    assert ta is not None and tb is not None and inputs <= set(ta) and set(ta) == set(tb)
    for key in inputs:
        np.testing.assert_array_equal(ta[key], tb[key])
    # the sources' features, stored once per run (studies and the gate pair samples with them)
    assert {k for k in ta if k.startswith("source/")} == {
        "source/pixels/images",
        "source/mnist-net/features",
        "source/mnist-net/logits",
        "source/mnist-net@masked/features",
        "source/mnist-net@masked/logits",
    }
    np.testing.assert_array_equal(ta["source/pixels/images"], ta["images"].astype(np.float32) / 255)


def test_sources_masks_and_controls_follow_the_sample_index(runs):
    run = read_run(runs[0])
    inputs = run.task_inputs()
    split = data.mnist_split()
    held = split["heldout_x"] if isinstance(split, dict) else split.heldout_x
    np.testing.assert_array_equal(inputs["images"][:, 0], np.asarray(held[:3]).reshape(3, 32, 32))
    assert inputs["masks"].shape == (3, 1, 32, 32) and inputs["control"].shape == (3, 3, 16, 16)
    labels, _ = run.conditions()
    assert labels.tolist() == [(int(inputs["labels"][i % 3]) + 1) % 10 for i in range(5)]
    cid = "mnist__ddim__s8__g1__inpaint_st0.5"
    kept = run.samples(cid)
    for k, i in enumerate(kept["indices"]):
        keep = inputs["masks"][i % 3, 0] == 0
        diff = np.abs(kept["images"][k, 0].astype(int) - inputs["images"][i % 3, 0].astype(int))
        assert diff[keep].max() <= 1  # mask blend keeps the unmasked pixels
        assert diff[~keep].max() > 0


def test_rows_and_records_carry_the_task_axis(runs):
    run = read_run(runs[0])
    df = run.results
    assert {"task", "strength"} <= set(df.columns)
    assert set(df["task"]) == {"img2img", "inpaint", "upscale"} and set(df["strength"]) == {0.5}
    rec = json.loads((runs[0] / "cells" / "mnist__euler__s8__g1__upscale_st0.5" / "cell.json").read_text())
    assert rec["task"] == "upscale" and rec["strength"] == 0.5
    psnr = df[(df.metric == "psnr") & (df.task == "inpaint")].set_index(["sampler", "extractor"])["value"]
    assert len(psnr) == 4  # per sampler: the unmasked region (kept exactly: the 100 dB cap) and the masked one
    assert (psnr.xs("pixels", level=1) == 100.0).all() and (psnr.xs("pixels@masked", level=1) < 40).all()
    assert set(df[(df.metric == "psnr") & (df.task != "inpaint")]["extractor"]) == {"pixels"}  # no mask: whole
    fid = df[(df.metric == "control_psnr") & (df.task == "upscale")]
    assert len(fid) == 2 and (fid["value"] > 12).all()  # 16.5 and 14.9 dB measured; another digit's: ≈ 10
    calls = df[(df.metric == "model_calls") & (df.sampler == "ddim")]
    assert set(calls["value"]) == {4.0}  # strength 0.5 of 8 DDIM steps


@pytest.mark.parametrize(
    ("conditions", "says"),
    [
        ({"images": {"path": "nowhere"}, "classes": 10, "masks": {"kind": "centre"}}, "conditions.images"),
        (
            {"images": {"dataset": "mnist-heldout", "samples": 3}, "classes": 10, "masks": {"path": "nomasks"}},
            "conditions.masks.path",
        ),
    ],
)
def test_missing_task_inputs_stop_before_generating(tmp_path, capsys, conditions, says):
    doc = {**yaml.safe_load(SUITE), "task": ["inpaint"], "conditions": conditions}
    doc["metrics"] = [{"name": "psnr", "extractor": "pixels"}]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err
    assert says in err and "nothing was generated" in err
    assert not (tmp_path / "run" / "cells").exists()


def test_given_masks_of_another_size_are_refused_naming_the_field(tmp_path, capsys):
    from PIL import Image

    folder = tmp_path / "masks"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / f"{i}.png")
    doc = {**yaml.safe_load(SUITE), "task": ["inpaint"]}
    doc["conditions"] = {**doc["conditions"], "masks": {"path": str(folder)}}
    doc.pop("strength")
    doc["metrics"] = [{"name": "psnr", "extractor": "pixels"}]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err
    assert "conditions.masks.path" in err and "16×16" in err and "32×32" in err


def test_a_sampler_that_cannot_start_part_way_is_refused_before_running(tmp_path, capsys):
    doc = {**yaml.safe_load(SUITE), "samplers": ["ddim", "pndm"], "task": ["img2img"]}
    doc["metrics"] = [{"name": "psnr", "extractor": "pixels"}]
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "run"), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "pndm" in err and "cannot start part-way" in err and "ddim at" not in err


def test_fd_on_masked_crops_reads_the_outputs_and_sources_cropped_to_their_masks(runs):
    from evalkit.features.base import build_extractor
    from evalkit.imageops.masks import mask_crops
    from evalkit.metrics.frechet import frechet_distance

    run = read_run(runs[0])
    cid = "mnist__euler__s8__g1__inpaint_st0.5"
    inputs, kept = run.task_inputs(), run.samples(cid)
    net = build_extractor("mnist-net")
    src = kept["indices"] % 3
    crops = mask_crops(kept["images"], inputs["masks"][src])
    gen = net(torch.from_numpy(crops))["features"]
    stored = run.features(cid)["mnist-net@masked"]["features"]
    np.testing.assert_allclose(stored, gen, rtol=1e-4, atol=1e-5)  # the crops of the outputs, batch by batch
    ref = net(torch.from_numpy(mask_crops(inputs["images"], inputs["masks"])))["features"]
    rows = run.results[(run.results.cell_id == cid) & (run.results.metric == "fd")]
    assert rows["extractor"].tolist() == ["mnist-net@masked"]
    g64, r64 = gen.astype(np.float64), ref.astype(np.float64)
    want = frechet_distance(g64.mean(0), np.cov(g64, rowvar=False), r64.mean(0), np.cov(r64, rowvar=False))
    assert rows["value"].iloc[0] == pytest.approx(want, rel=1e-4)
    other = run.results[(run.results.task == "img2img") & (run.results.metric == "fd")]
    assert other.empty  # no mask, no masked region: not scored
