"""The ``images`` adapter (issue 18): a grid of finished images scored as if evalkit had made them.

The acceptance test runs a small zoo grid keeping every sample (``grid_samples`` = ``samples``), writes its images
as PNGs in the folder layout and as a manifest, runs images suites that leave the grid out, and finds the same
cells and quality rows. Reported seconds and cost reach the rows marked ``reported``; bad manifests exit 2 naming
what is wrong. Everything but the one zoo run (a module fixture) reads a few tiny PNGs."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evalkit.cli import main
from evalkit.generate import GenerationRequest
from evalkit.generate.adapter import GeneratedBatch
from evalkit.generate.images_adapter import ImagesAdapter
from evalkit.run.cell import generate_shard
from evalkit.run.costs import cost_rows, costs, timing_record
from evalkit.run.runner import Runner
from evalkit.store import read_run
from evalkit.suite import Cell, ModelSpec, SamplerSpec, TimingSpec, load_suite, parse_suite

QUALITY = ["fd", "kid", "class_acc"]
SCORING = (
    "samples: 20\nbatch_size: 20\ngrid_samples: 20\nreference: {dataset: mnist-heldout}\nextractor: mnist-net\n"
    "metrics: [fd, kid, class_acc, throughput]\ntiming: {repeats: 1, warmup: 0}\n"
)


def _runner(suite: Path, out: Path, cache: Path) -> None:
    summary = Runner(load_suite(suite), out, device="cpu", cache_dir=cache).run()
    assert not summary.failed and not summary.failed_metrics, summary.failed


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished zoo run (2 samplers × 2 steps, 20 samples, every sample kept), its images as a folder layout and
    as a manifest reporting seconds, cost, nfe and class per image."""
    root = tmp_path_factory.mktemp("images")
    cache = root / "cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EVALKIT_CACHE_DIR", str(cache))
        mp.setenv("TORCH_HOME", str(root / "torch_home"))
        (root / "zoo.yaml").write_text(
            "name: zoo\nmodels: [{name: mnist, adapter: zoo}]\nsamplers: [ddim, euler]\nsteps: [1, 2]\n"
            "conditions: {classes: 10}\n" + SCORING
        )
        _runner(root / "zoo.yaml", root / "runs" / "zoo", cache)
    rows = []
    for cell in sorted((root / "runs" / "zoo" / "cells").iterdir()):
        rec = json.loads((cell / "cell.json").read_text())
        saved = np.load(cell / "samples.npz")
        assert len(saved["indices"]) == 20
        folder = root / "images" / rec["model"] / rec["sampler"] / str(rec["steps"]) / f"{rec['guidance']:g}"
        folder.mkdir(parents=True)
        for i, img, label in zip(saved["indices"], saved["images"], saved["labels"]):
            Image.fromarray(img.transpose(1, 2, 0)).save(folder / f"{i}.png")  # 0.png ... 19.png: natural order
            rows.append(
                {
                    "path": (folder / f"{i}.png").relative_to(root).as_posix(),
                    "model": rec["model"],
                    "sampler": rec["sampler"],
                    "steps": rec["steps"],
                    "guidance": rec["guidance"],
                    "class": int(label),
                    "seconds": 1.0 + 0.1 * int(i),
                    "cost": 0.25,
                    "nfe": rec["steps"],
                }
            )
    rows = rows[::-1]  # reversed: manifest order must not matter once a seed orders each cell
    for r in rows:
        r["seed"] = 1000 + int(Path(r["path"]).stem)
    _write_csv(root / "runs.csv", rows)
    return {"root": root, "cache": cache, "zoo": root / "runs" / "zoo", "manifest": root / "runs.csv"}


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def _quality(run: Path):
    df = read_run(run).results
    return df[df.metric.isin(QUALITY)].set_index(["cell_id", "metric"])[["value", "std", "ci_low", "ci_high"]]


def _images_suite(path: Path, options: str, extra: str = "") -> Path:
    path.write_text(f"name: images\nmodels: [{{name: mnist, adapter: images, options: {options}}}]\n{extra}{SCORING}")
    return path


def test_the_images_adapter_reproduces_a_finished_run_from_its_own_samples(zoo):
    """Folder layout and manifest, no grid written (nor, for the manifest, conditions): the same cells and rows."""
    suite = load_suite(_images_suite(zoo["root"] / "manifest.yaml", "{manifest: runs.csv}"))
    assert [s.label for s in suite.samplers] == ["euler", "ddim"]  # in the order met (the manifest is reversed)
    assert suite.steps == [1, 2] and suite.guidance == [1.0]
    assert suite.conditions == {"classes": list(range(10))}  # the manifest's classes, as `classes: 10` gives
    want = _quality(zoo["zoo"]).sort_index()
    for name, options, extra in (
        ("folder", "{folder: images}", "conditions: {classes: 10}\n"),
        ("manifest", "{manifest: runs.csv}", ""),
    ):
        suite_file = _images_suite(zoo["root"] / f"{name}.yaml", options, extra)
        _runner(suite_file, zoo["root"] / "runs" / name, zoo["cache"])
        got = _quality(zoo["root"] / "runs" / name).sort_index()
        assert list(got.index) == list(want.index)
        np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())  # bit for bit: the same features


def test_reported_seconds_cost_and_nfe_reach_the_rows_marked_reported(zoo):
    run = zoo["root"] / "runs" / "manifest"
    if not run.exists():
        _runner(_images_suite(zoo["root"] / "manifest.yaml", "{manifest: runs.csv}"), run, zoo["cache"])
    data = read_run(run)
    rows = data.results[data.results.cell_id == "mnist__ddim__s2__g1"].set_index("metric")
    seconds = [1.0 + 0.1 * i for i in range(20)]
    s = rows.loc["s_per_image"]
    assert s.value == pytest.approx(np.median(seconds)) and s.cost_source == "reported"
    assert (s.ci_low, s.ci_high) == pytest.approx((1.0, 2.9))  # the fastest and slowest image
    assert rows.loc["images_per_s"].value == pytest.approx(1 / np.median(seconds))
    assert rows.loc["cost_per_image"].value == pytest.approx(0.25)
    assert rows.loc["cost_per_image"].cost_source == "reported"
    assert rows.loc["nfe"].value == 2 and rows.loc["nfe"].cost_source == "reported"
    assert math.isnan(rows.loc["model_calls"].value) and rows.loc["model_calls"].cost_source == "unknown"
    assert math.isnan(rows.loc["peak_mem_mb"].value)  # reading files measures nothing about the model
    assert rows.loc["fd"].s_per_image == pytest.approx(np.median(seconds))  # every row's cost column too
    rec = data.cells["mnist__ddim__s2__g1"]
    assert rec["timing"]["source"] == "reported" and rec["timing"]["extra_batches"] == 0
    assert rec["timing"]["reported"]["cost_per_image"]["total"] == pytest.approx(5.0)
    assert rec["model_info"]["adapter"] == "images" and len(rec["model_info"]["images_sha256"]) == 64
    from evalkit.report.tables import timing_words

    assert timing_words(data.results).startswith("time reported by the adapter")


# -- the grid from a manifest, without running anything -----------------------------------------------------------
def _png(path: Path, value: int = 0, size: int = 8, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (size, size), value if mode != "RGB" else (value, value, value)).save(path)
    return path


def _manifest(tmp_path: Path, rows: list[dict], name: str = "m.csv") -> Path:
    for r in rows:
        if "path" in r and not (tmp_path / r["path"]).exists():
            _png(tmp_path / r["path"], int(r.get("class", 0) or 0) * 20)
    return _write_csv(tmp_path / name, rows)


def _suite(tmp_path: Path, body: str, samples: int = 2) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: s\n{body}\nsamples: {samples}\nmetrics: [throughput]\n")
    return path


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def test_the_grid_is_filled_from_the_manifest_with_free_sampler_labels(tmp_path):
    rows = [
        {"path": f"{m}/{s}-{st}-{i}.png", "model": m, "sampler": s, "steps": st, "guidance": 7.5}
        for m, s, st in [("sdxl", "dpmpp_2m_karras_comfy", 30), ("sdxl", "euler", 20), ("sd15", "euler", 20)]
        for i in range(2)
    ]
    _manifest(tmp_path, rows)
    suite = load_suite(_suite(tmp_path, "models: [{adapter: images, options: {manifest: m.csv}}]"))
    assert [m.name for m in suite.models] == ["sdxl", "sd15"]
    assert [m.options["model"] for m in suite.models] == ["sdxl", "sd15"]
    assert Path(suite.models[0].options["manifest"]).is_absolute()
    assert [s.name for s in suite.samplers] == ["dpmpp_2m_karras_comfy", "euler"] and suite.steps == [20, 30]
    assert sorted(c.cell_id for c in suite.cells()) == [
        "sd15__euler__s20__g7.5",
        "sdxl__dpmpp_2m_karras_comfy__s30__g7.5",
        "sdxl__euler__s20__g7.5",
    ]  # no full cross: `only` keeps the cells that have images
    assert suite.conditions is None
    # listing an axis selects from the manifest; a listed cell without images is an error
    picked = load_suite(
        _suite(tmp_path, "models: [{adapter: images, options: {manifest: m.csv, model: sdxl}}]\nsamplers: [euler]")
    )
    assert [c.cell_id for c in picked.cells()] == ["sdxl__euler__s20__g7.5"]


def test_csv_jsonl_and_parquet_manifests_read_alike_and_prompts_become_conditions(tmp_path):
    import pandas as pd

    from evalkit.suite.image_table import read_table

    rows = [
        {"path": f"{i}.png", "sampler": "x", "steps": 4, "prompt": p, "seconds": 0.5, "seed": 2**60 + i}
        for i, p in enumerate(["a cat", "a cat", "a dog", "a dog", "a cat", "a cat"])
    ]
    _manifest(tmp_path, rows)
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pd.DataFrame(rows).to_parquet(tmp_path / "m.parquet")
    tables = [read_table({"manifest": f"m.{ext}"}, tmp_path) for ext in ("csv", "jsonl", "parquet")]
    plain = [[dataclasses.replace(r, where="") for r in t.rows] for t in tables]
    assert plain[0] == plain[1] == plain[2]  # seeds past 2**53 kept exactly
    assert tables[1].rows[0].seed == 2**60 and tables[2].rows[0].where == "m.parquet row 1"
    suite = load_suite(_suite(tmp_path, "models: [{adapter: images, options: {manifest: m.jsonl}}]", samples=6))
    assert suite.conditions == {"prompts": ["a cat", "a dog"], "per_prompt": 2}


def test_sample_order_is_the_index_then_the_seed_then_the_manifest(tmp_path):
    for col, values in (("index", [1, 0, 2]), ("seed", [70, 5, 99])):
        rows = [{"path": f"{col}{k}.png", "sampler": "x", "steps": 4, col: v} for k, v in enumerate(values)]
        for k in range(3):
            _png(tmp_path / f"{col}{k}.png", 50 * k)
        adapter = ImagesAdapter(manifest=str(_manifest(tmp_path, rows, f"{col}.csv")))
        batch = next(adapter.generate(GenerationRequest(np.arange(3), 0, "x", 4, 1.0, 8)))
        assert batch.images[:, 0, 0, 0].tolist() == [50, 0, 100]  # sample 0 is the image with index 0 / least seed
        assert batch.model_calls is None and batch.reported_seconds is None


def test_conditions_must_line_up_with_the_suite(tmp_path, capsys):
    rows = [{"path": f"{i}.png", "sampler": "x", "steps": 4, "class": c} for i, c in enumerate([0, 1, 1])]
    _manifest(tmp_path, rows)
    body = "models: [{adapter: images, options: {manifest: m.csv}}]\nconditions: {classes: 2}"
    code, err = _run(["run", str(_suite(tmp_path, body, samples=3)), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "sample 2 (m.csv line 4) has class 1, the suite gives 0" in err


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"file": "a.png"}], "has no 'path' column"),
        ([{"path": "a.png"}, {"path": "nope/b.png"}], "1 image file(s) do not exist: "),
        ([{"path": "a.png", "guidence": 3}], "unknown column 'guidence'; did you mean 'guidance'?"),
        ([{"path": "a.png", "steps": "many"}], "m.csv line 2, column 'steps': expected an integer ≥ 1; got 'many'"),
        ([{"path": "a.png"}], "cell images__images__s4__g1: 1 images, fewer than samples (2)"),
        ([{"path": "a.png", "index": 0}, {"path": "b.png", "index": 5}], "no image for sample index 1"),
    ],
)
def test_bad_manifests_exit_2_with_the_reason(tmp_path, capsys, rows, message):
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png")
    _write_csv(tmp_path / "m.csv", rows)
    suite = _suite(tmp_path, "models: [{adapter: images, options: {manifest: m.csv}}]\nsamplers: [images]\nsteps: [4]")
    code, err = _run(["run", str(suite), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and message in err, err
    if "do not exist" in message:
        assert str(tmp_path / "nope" / "b.png") in err  # listed


def test_an_unknown_column_is_a_warning_and_an_unreadable_image_an_error(tmp_path, capsys):
    _png(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    _write_csv(tmp_path / "m.csv", [{"path": "a.png", "width": 8}, {"path": "b.png", "width": 8}])
    suite = _suite(tmp_path, "models: [{adapter: images, options: {manifest: m.csv}}]\nsamplers: [x]\nsteps: [4]", 1)
    with pytest.warns(UserWarning, match="columns not read by evalkit: width"):
        code, err = _run(["run", str(suite), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "1 unreadable image(s)" in err and "b.png" in err and "strict: false" in err
    with pytest.warns(UserWarning, match="width"):
        lenient = ImagesAdapter(manifest=str(tmp_path / "m.csv"), strict=False)
    assert [r.path.name for r in lenient.table.rows] == ["a.png"] and "b.png" in next(iter(lenient.skipped))


def test_a_folder_must_follow_the_layout(tmp_path):
    _png(tmp_path / "imgs" / "m" / "euler" / "30" / "7.5" / "0.png")
    _png(tmp_path / "imgs" / "m" / "euler" / "30" / "stray.png")
    with pytest.raises(Exception, match="<model>/<sampler>/<steps>/<guidance>/<file>.*m/euler/30/stray.png"):
        parse_suite(
            {
                "name": "s",
                "models": [{"adapter": "images", "options": {"folder": str(tmp_path / "imgs")}}],
                "samples": 1,
                "metrics": ["throughput"],
            }
        )


def test_one_decoder_for_every_image_reader():
    """The adapters, `evalkit score` and the reference sets read pixels with the same function (its rules are tested
    in tests/references/test_sources.py), so the same file gives the same pixels whichever way it comes in."""
    from evalkit import imagefiles
    from evalkit.generate import http_adapter, images_adapter
    from evalkit.references import sources
    from evalkit.suite import image_table

    assert images_adapter.decode_rgb is http_adapter.decode_rgb is sources.decode_rgb is imagefiles.decode_rgb
    assert image_table.IMAGE_EXTENSIONS is sources.IMAGE_EXTENSIONS is imagefiles.IMAGE_EXTENSIONS


# -- the plumbing from GeneratedBatch to the rows, for any adapter that reports (images, http) ----------------------
class _Reporting:
    """A measured adapter (as http is) that reports each image's seconds and cost."""

    def __init__(self, seconds: list[float], cost: list[float] | None):
        self.seconds, self.cost = seconds, cost

    def generate(self, request):
        idx = request.indices
        yield GeneratedBatch(
            torch.zeros((len(idx), 3, 2, 2), dtype=torch.uint8),
            idx,
            model_calls=4,
            nfe=8,
            reported_seconds=[self.seconds[i] for i in idx],
            cost=None if self.cost is None else [self.cost[i] for i in idx],
        )


def _shard_of(adapter, n: int = 4):
    cell = Cell(ModelSpec("m", "x"), SamplerSpec("s", "s"), 4, 1.0, n, 0)
    return generate_shard(
        adapter,
        {},
        cell,
        np.arange(n),
        request=lambda idx: GenerationRequest(idx, 0, "s", 4, 1.0, n),
        warm_up=False,
        keep=0,
        device="cpu",
        batch_size=n,
        timing=TimingSpec(repeats=1, warmup=0),
    )


def test_reported_seconds_replace_the_measured_ones_and_the_clock_stays_in_the_record():
    shard = _shard_of(_Reporting([2.0, 4.0, 6.0, 100.0], [0.1, 0.1, 0.2, 0.2]))
    cost = costs([shard])
    rows = {r["metric"]: r for r in cost_rows([shard], cost)}
    assert rows["s_per_image"]["value"] == 5.0 and rows["s_per_image"]["cost_source"] == "reported"
    assert rows["ms_per_model_call"]["value"] == pytest.approx(1250.0)  # 5 s over 4 counted calls
    assert rows["model_calls"]["cost_source"] == "counted" and rows["peak_mem_mb"]["cost_source"] == "measured"
    assert rows["cost_per_image"]["value"] == pytest.approx(0.15)
    rec = timing_record([shard], TimingSpec(repeats=1))
    assert rec["source"] == "reported" and len(rec["repeats"]) == 1  # evalkit's own timing, kept
    assert rec["reported"]["s_per_image"]["mean"] == pytest.approx(28.0)
    # a sample without a reported time: the measured time stands, and no cost row is invented
    partial = _shard_of(_Reporting([2.0, math.nan, 6.0, 1.0], None))
    rows = {r["metric"]: r for r in cost_rows([partial], costs([partial]))}
    assert rows["s_per_image"]["cost_source"] == "measured" and "cost_per_image" not in rows
