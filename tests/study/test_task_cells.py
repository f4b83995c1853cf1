"""Task cells in the study: a real img2img run (2 samplers × 2 strengths, N = 8, psnr against each sample's source)
compared, ranked and summarised without merging, mispairing or misnaming cells that differ only by strength.

The model is a local adapter (``module:function``, as third-party adapters are given): sample i is a blend of its
source image and seeded noise, ``(1 − strength)·source + strength·amp·noise`` (amp per sampler), so a higher strength
is further from the source and the two samplers differ at every strength. Every number compared is checked against a
brute-force transcription written here (PSNR per pair with numpy, the paired bootstrap with its index rows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evalkit.metrics.base import MetricInputs, get_metric
from evalkit.metrics.resampling import bootstrap_indices
from evalkit.run.runner import Runner
from evalkit.store import RunStore, read_run
from evalkit.study import compare_cells, summary_text
from evalkit.study.cells import cell_frame
from evalkit.study.compare import PAIR_COLUMNS, PAIRED, TASK_PAIR_COLUMNS, _pairing_key, pair_columns
from evalkit.study.floors import suite_floors
from evalkit.study.paired import replicates
from evalkit.study.rank import PairTable, rank, separate_ci_pairs
from evalkit.study.task_cells import task_facets, task_label
from evalkit.study.words import budget_lines, cell_namer, column_sentences, headline
from evalkit.suite import load_suite, parse_suite

SUITE = """\
name: blend-img2img
models: [{name: m, adapter: "blend_adapter:make"}]
samplers: [ddim, euler]
steps: [4]
guidance: [1]
task: img2img
strength: [0.3, 0.7]
samples: 8
batch_size: 8
seed: 0
conditions:
  images: {dataset: mnist-heldout, samples: 8}
  classes: 10
metrics:
  - {name: psnr, extractor: pixels}
  - throughput
"""
N = 8


@pytest.fixture(scope="module")
def task_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("task-study")
    (root / "suite.yaml").write_text(SUITE)
    assert Runner(load_suite(root / "suite.yaml"), root / "run", device="cpu").run().exit_code == 0
    return root / "run"


def psnr_terms(gen: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Brute force: per pair 10·log10(1 / MSE) over all channels and pixels (data range 1), capped at 100 dB."""
    out = []
    for g, s in zip(gen.astype(np.float64), src.astype(np.float64)):
        mse = float(np.mean((g - s) ** 2))
        out.append(100.0 if mse == 0 else min(100.0, 10.0 * np.log10(1.0 / mse)))
    return np.asarray(out)


def cell_terms(run, cell_id: str) -> np.ndarray:
    sources = run.task_inputs()["images"].astype(np.float64) / 255.0
    gen = run.features(cell_id)["pixels"]["images"]
    return psnr_terms(gen, sources[np.arange(len(gen)) % len(sources)])


def test_four_cells_each_with_its_own_value(task_run):
    run = read_run(task_run)
    cells = cell_frame(run.results)
    assert len(cells) == 4 and cells["cell_id"].nunique() == 4
    assert sorted(zip(cells["sampler"], cells["strength"])) == [
        ("ddim", 0.3),
        ("ddim", 0.7),
        ("euler", 0.3),
        ("euler", 0.7),
    ]
    worst = 0.0
    for _, c in cells.iterrows():
        assert c["cell_id"].endswith(f"__img2img_st{c['strength']:g}") and c["task"] == "img2img"
        worst = max(worst, abs(float(np.mean(cell_terms(run, c["cell_id"]))) - float(c["psnr"])))
    print(f"[agreement] psnr of each task cell vs brute-force PSNR against its sources: max |Δ| = {worst:.2e} dB")
    assert worst < 1e-4  # float32 features vs float64 here
    # the blend: a higher strength is further from the source, for both samplers
    by = cells.set_index(["sampler", "strength"])["psnr"]
    assert by[("ddim", 0.3)] > by[("ddim", 0.7)] and by[("euler", 0.3)] > by[("euler", 0.7)]


def test_pairs_are_like_with_like(task_run, tmp_path):
    run = read_run(task_run)
    values = cell_frame(run.results).set_index("cell_id")["psnr"]
    column = compare_cells(run, "psnr", pairs="column", cache_dir=tmp_path)
    assert list(column.columns) == TASK_PAIR_COLUMNS
    assert len(column) == 2  # ddim vs euler at each strength, never across strengths
    for _, p in column.iterrows():
        assert p["strength_a"] == p["strength_b"] and p["task_a"] == p["task_b"] == "img2img"
        assert {p["sampler_a"], p["sampler_b"]} == {"ddim", "euler"}
        assert (p["value_a"], p["value_b"]) == (values[p["cell_a"]], values[p["cell_b"]])
        assert p["diff"] == pytest.approx(p["value_a"] - p["value_b"])
        assert p["basis"] == PAIRED  # the run stored the sources' features: replicates against each one's source
    every = compare_cells(run, "psnr", pairs="all", cache_dir=tmp_path)
    assert len(every) == 6 and set(every["cell_a"]) | set(every["cell_b"]) == set(values.index)
    for _, p in every.iterrows():  # each side's fields are its own cell's
        for side in "ab":
            assert p[f"cell_{side}"].endswith(f"{p[f'sampler_{side}']}__s4__g1__img2img_st{p[f'strength_{side}']:g}")
    first = every.iloc[0]  # looked up the other way round: each side keeps its own task fields
    flipped = PairTable(every).get("psnr", (first["run_b"], first["cell_b"]), (first["run_a"], first["cell_a"]))
    assert (flipped["cell_a"], flipped["strength_a"]) == (first["cell_b"], first["strength_b"])
    assert (flipped["cell_b"], flipped["strength_b"]) == (first["cell_a"], first["strength_a"])
    assert flipped["diff"] == -first["diff"]


def test_rankings_and_summary_per_strength(task_run, tmp_path):
    run = read_run(task_run)
    cells = cell_frame(run.results)
    table = PairTable(compare_cells(run, "psnr", cache_dir=tmp_path))
    names = cells.apply(cell_namer(cells), axis=1)
    assert sorted(names) == ["ddim img2img st0.3", "ddim img2img st0.7", "euler img2img st0.3", "euler img2img st0.7"]
    facets = task_facets(cells)
    assert [label for label, _ in facets] == ["img2img st0.3", "img2img st0.7"]
    text = summary_text(run, cache_dir=tmp_path)
    for label, facet in facets:
        best = facet.loc[facet["psnr"].idxmax()]
        r = rank(facet, "psnr", table)
        assert r.best["cell_id"] == best["cell_id"] and r.runner_up[0]["strength"] == best["strength"]
        assert f"guidance 1 · {label}" in text  # one grid per strength, each with both samplers
        line = next(s for s in text.splitlines() if s.strip().startswith(f"guidance 1, {label}:"))
        assert f"{best['sampler']} has the best PSNR: {best['psnr']:.4g}" in line
    grid = text.split("PSNR (higher is better)")[1].split("\n\n")[0]
    assert sum(row.strip().startswith(("ddim", "euler")) for row in grid.splitlines()) == 4
    overall = cells.loc[cells["psnr"].idxmax()]
    assert headline(cells, "psnr", table).startswith(f"Best PSNR overall: {overall['sampler']} {task_label(overall)}")
    own = separate_ci_pairs(cells, "psnr")  # the report's pairs without replicates: the same cells' fields
    assert list(own.columns) == TASK_PAIR_COLUMNS and len(own) == 6
    # the report's sentences over one guidance (both strengths): one ranking per strength, never across
    sentences = column_sentences(cells, "psnr", table)
    assert [s.split(",")[0] for s in sentences] == ["At 4 steps (img2img st0.3)", "At 4 steps (img2img st0.7)"]


def test_cells_of_two_tasks_are_ranked_apart():
    """Synthetic cells of two tasks (no comparisons between them exist): a headline and a frontier per task."""
    cells = pd.DataFrame(
        {
            "run_id": "r",
            "cell_id": ["a", "b", "c", "d"],
            "model": "m",
            "sampler": ["ddim", "euler"] * 2,
            "steps": 4,
            "guidance": 1.0,
            "n": 8,
            "task": ["img2img", "img2img", "inpaint", "inpaint"],
            "strength": 0.5,
            "controlnet_scale": np.nan,
            "psnr": [20.0, 21.0, 30.0, 29.0],
            "psnr_lo": [19.7, 20.7, 29.7, 28.7],
            "psnr_hi": [20.3, 21.3, 30.3, 29.3],
            "nfe": [2.0, 4.0, 2.0, 4.0],
        }
    )
    table = PairTable(separate_ci_pairs(cells, "psnr"))
    assert len(table) == 2  # ddim vs euler within each task
    text = headline(cells, "psnr", table)
    assert "Best PSNR overall for img2img: euler img2img st0.5" in text
    assert "Best PSNR overall for inpaint: ddim inpaint st0.5" in text
    lines = budget_lines(cells, "psnr", "nfe", "NFE", table)
    assert [line.split(":")[0] for line in lines] == ["img2img", "img2img", "inpaint"]


def test_stored_source_features_give_paired_replicates(task_run, tmp_path):
    """Where the run folder holds the sources' features (task_inputs.npz ``source/<extractor>/<output>``), the
    comparison is paired, its replicates are PSNR against each sample's source, resampled on the run's rows."""
    arrays = RunStore(task_run).load_task_inputs()  # the runner stores them: the pixels extractor on the sources
    np.testing.assert_array_equal(arrays["source/pixels/images"], arrays["images"].astype(np.float32) / 255.0)
    run = read_run(task_run)
    pairs = compare_cells(run, "psnr", pairs="column", cache_dir=tmp_path / "cache", n_resamples=200)
    assert set(pairs["basis"]) == {PAIRED}
    idx = bootstrap_indices(N, 200, seed=run.seed)
    worst = 0.0
    for _, p in pairs.iterrows():
        ta, tb = cell_terms(run, p["cell_a"]), cell_terms(run, p["cell_b"])
        reps = ta[idx].mean(axis=1) - tb[idx].mean(axis=1)
        reps = reps - reps.mean() + p["diff"]
        lo, hi = np.quantile(reps, [0.025, 0.975])
        lo, hi = min(lo, p["diff"]), max(hi, p["diff"])
        worst = max(worst, abs(lo - p["ci_low"]), abs(hi - p["ci_high"]))
    print(f"[agreement] paired CI of ΔPSNR vs brute-force paired bootstrap on the sources: max |Δ| = {worst:.2e} dB")
    assert worst < 1e-4


def test_runs_on_other_sources_are_not_compared(task_run, tmp_path):
    """psnr against other source images is another measurement (as FD against another reference): the same suite
    run on the inverted sources gets no pairs with the first run, and its samples are not the same draws."""
    from PIL import Image

    (tmp_path / "sources").mkdir()
    for i, img in enumerate(255 - read_run(task_run).task_inputs()["images"]):
        Image.fromarray(img.transpose(1, 2, 0)).save(tmp_path / "sources" / f"{i:02d}.png")
    other = SUITE.replace("{dataset: mnist-heldout, samples: 8}", f"{{path: {tmp_path / 'sources'}}}")
    (tmp_path / "other.yaml").write_text(other.replace("name: blend-img2img", "name: blend-other"))
    assert Runner(load_suite(tmp_path / "other.yaml"), tmp_path / "run", device="cpu").run().exit_code == 0
    runs = [read_run(task_run), read_run(tmp_path / "run")]
    assert runs[0].run_id != runs[1].run_id
    pairs = compare_cells(runs, "psnr", cache_dir=tmp_path / "cache")
    assert len(pairs) == 12 and (pairs["run_a"] == pairs["run_b"]).all()  # 6 within each run, none across
    assert _pairing_key(runs[0]) != _pairing_key(runs[1])


def test_task_replicates_resample_each_sample_with_its_own_source_and_mask():
    """The replicates of a task metric equal the metric recomputed on each resample with the samples' sources and
    masks resampled alongside (inpaint psnr on the unmasked region; ssim on the whole image)."""
    rng = np.random.default_rng(0)
    gen, src = rng.random((6, 3, 12, 12)), rng.random((6, 3, 12, 12))
    mask = np.zeros((6, 1, 12, 12), dtype=np.uint8)
    mask[:, :, 3:9, 3:9] = 1
    idx = bootstrap_indices(6, 20, seed=1)
    worst = 0.0
    for name, m in (("psnr", mask), ("ssim", None)):
        inputs = MetricInputs(gen={"images": gen}, source={"images": src}, mask=m, options={"bootstrap": 0})
        reps = replicates(get_metric(name), inputs, idx)[name]
        for b, ix in enumerate(idx):
            one = MetricInputs(
                gen={"images": gen[ix]},
                source={"images": src[ix]},
                mask=None if m is None else m[ix],
                options={"bootstrap": 0},
            )
            worst = max(worst, abs(get_metric(name).compute(one)[name].value - reps[b]))
    print(f"[agreement] task replicates vs the metric recomputed on each resample: max |Δ| = {worst:.2e}")
    assert worst < 1e-9


def test_source_metrics_have_no_real_vs_real_floor_in_a_task_suite(tmp_path):
    raw = {
        "name": "t",
        "models": [{"name": "m", "adapter": "zoo"}],
        "samplers": ["ddim"],
        "steps": [4],
        "samples": 4,
        "conditions": {"classes": 10},
        "reference": {"dataset": "mnist-heldout"},
        "metrics": [{"name": "psnr", "extractor": "pixels"}],
    }
    task = {"task": "img2img", "conditions": {"images": {"dataset": "mnist-heldout", "samples": 4}, "classes": 10}}
    ref = {"pixels": {"images": np.random.default_rng(0).random((12, 3, 8, 8))}}
    ex = {"pixels": type("E", (), {"weights_id": "none", "mode": "unit-float"})()}
    plain = suite_floors(parse_suite(raw), ref, {"fingerprint": "f"}, ex, tmp_path)["rows"]
    tasked = suite_floors(parse_suite({**raw, **task}), ref, {"fingerprint": "f"}, ex, tmp_path)["rows"]
    assert [r["available"] for r in plain] == [True]  # as before tasks: reference image i against image i
    assert [r["available"] for r in tasked] == [False] and "own source" in tasked[0]["reason"]


def test_frames_without_task_columns_are_as_before():
    cells = pd.DataFrame({"run_id": ["r", "r"], "cell_id": ["a", "b"], "model": "m", "sampler": ["ddim", "euler"]})
    assert pair_columns(cells.columns) == PAIR_COLUMNS
    assert list(cells.apply(cell_namer(cells), axis=1)) == ["ddim", "euler"]
    assert [label for label, _ in task_facets(cells)] == [""]


def test_a_masks_region_is_its_own_column_and_masks_follow_each_cells_task(tmp_path):
    """psnr on the whole (img2img) / unmasked (inpaint) image and psnr on the masked region: two specs of one metric
    on one extractor. Each row is compared with its own spec's replicates: the inpaint cells' unmasked PSNR is the
    100 dB cap in every resample (a zero-width paired CI), and an img2img cell, which reads no mask, is resampled
    on the whole image (its replicates centre on its value); the masked region's rows are resampled with each
    sample's own mask."""
    doc = SUITE.replace("task: img2img", "task: [img2img, inpaint]").replace("strength: [0.3, 0.7]", "strength: [0.5]")
    doc = doc.replace("  classes: 10", "  classes: 10\n  masks: {kind: centre, size: 0.5}")
    doc = doc.replace(
        "  - {name: psnr, extractor: pixels}",
        "  - {name: psnr, extractor: pixels}\n  - {name: psnr, extractor: pixels, options: {region: masked}}",
    )
    (tmp_path / "s.yaml").write_text(doc)
    assert Runner(load_suite(tmp_path / "s.yaml"), tmp_path / "run", device="cpu").run().exit_code == 0
    run = read_run(tmp_path / "run")
    rows = run.results[run.results.metric == "psnr"]
    assert sorted(rows.groupby("task")["extractor"].apply(sorted).items()) == [
        ("img2img", ["pixels", "pixels"]),
        ("inpaint", ["pixels", "pixels", "pixels@masked", "pixels@masked"]),
    ]
    pairs = compare_cells(run, "psnr", pairs="column", cache_dir=tmp_path / "cache", n_resamples=200)
    inpaint = pairs[(pairs.task_a == "inpaint") & (pairs.extractor == "pixels")]
    assert len(inpaint) == 1 and inpaint["diff"].iloc[0] == 0 and inpaint["basis"].iloc[0] == PAIRED
    assert (inpaint["ci_low"] == 0).all() and (inpaint["ci_high"] == 0).all()  # 100 dB on both sides, always
    masked = pairs[pairs.extractor == "pixels@masked"].iloc[0]  # the regenerated region, resampled with its masks
    assert masked["basis"] == PAIRED and masked["ci_low"] <= masked["diff"] <= masked["ci_high"]
    assert masked["ci_high"] > masked["ci_low"]  # a real spread: the masked region differs between samplers
    whole = pairs[(pairs.task_a == "img2img") & (pairs.extractor == "pixels")].iloc[0]
    assert whole["basis"] == PAIRED and whole["ci_low"] <= whole["diff"] <= whole["ci_high"]
    assert whole["ci_high"] - whole["ci_low"] < 2.0  # whole-image PSNR replicates, not the masked region's
