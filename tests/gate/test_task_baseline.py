"""Task cells in the gate: ``evalkit baseline`` of a real img2img suite (2 samplers × 2 strengths, psnr against each
sample's source, N = 8) and ``evalkit check`` of runs against it, cell by cell.

The model is a local adapter (``module:function``): sample i blends its source with seeded noise, ``(1 − strength)·
source + strength·amp·noise``; its option ``worse`` raises amp above strength ``worse_above``, so a rerun with
``{worse_above: 0.5, worse: 1.5}`` changes the strength-0.7 cells only (the strength-0.3 cells are bit-identical).
The check must flag exactly those, name each cell apart, and judge psnr against the sources, never the reference.
"""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from evalkit.cli import main
from evalkit.gate.baseline import Baseline, BaselineEntry, build_baseline
from evalkit.gate.compare import PASS, REGRESSION, compare
from evalkit.metrics.resampling import bootstrap_indices
from evalkit.run.runner import Runner
from evalkit.store import RunStore, read_run
from evalkit.suite import load_suite

SUITE = """\
name: blend-img2img
models: [{{name: m, adapter: "blend_adapter:make"{options}}}]
samplers: [ddim, euler]
steps: [4]
guidance: [1]
task: img2img
strength: [0.3, 0.7]
samples: 8
batch_size: 8
seed: 0
conditions:
  images: {{dataset: mnist-heldout, samples: 8}}
  classes: 10
metrics:
  - {{name: psnr, extractor: pixels}}
  - throughput
"""
CELLS = [f"m__{s}__s4__g1__img2img_st{st}" for s in ("ddim", "euler") for st in ("0.3", "0.7")]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A baseline over 3 seed sets, and a rerun on the suite's seed whose strength-0.7 cells got worse."""
    root = tmp_path_factory.mktemp("task-gate")
    (root / "suite.yaml").write_text(SUITE.format(options=""))
    (root / "worse.yaml").write_text(SUITE.format(options=", options: {worse_above: 0.5, worse: 1.5}"))
    args = ["baseline", str(root / "suite.yaml"), "--seeds", "3", "-o", str(root / "b.json")]
    assert main([*args, "--work-dir", str(root / "seeds"), "--device", "cpu", "-q"]) == 0
    assert Runner(load_suite(root / "worse.yaml"), root / "worse", device="cpu").run().exit_code == 0
    return root


def check(made: Path, run: Path, tag: str) -> tuple[int, list[ET.Element]]:
    junit = made / f"{tag}.xml"
    code = main(["check", str(run), "--baseline", str(made / "b.json"), "--junit", str(junit), "-q"])
    return code, ET.parse(junit).getroot().findall(".//testcase")


def cell_of(case: ET.Element) -> str:
    return case.get("classname").removeprefix("evalkit.blend-img2img.")


def psnr_terms(gen: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Brute force: per pair 10·log10(1 / MSE) over all channels and pixels (data range 1), capped at 100 dB."""
    mse = ((gen.astype(np.float64) - src.astype(np.float64)) ** 2).reshape(len(gen), -1).mean(axis=1)
    return np.minimum(100.0, 10.0 * np.log10(1.0 / mse))


def test_baseline_names_each_task_cell(made):
    b = Baseline.load(made / "b.json")
    assert sorted(e.cell for e in b.entries) == sorted(CELLS) and {e.metric for e in b.entries} == {"psnr"}
    for e in b.entries:
        assert e.task == "img2img" and e.cell.endswith(f"_st{e.strength:g}") and e.controlnet_scale is None
    assert b.sources is not None and b.sources["count"] == 8
    doc = json.loads((made / "b.json").read_text())
    assert "controlnet_scale" not in doc["entries"][0]  # an axis the task has not: absent, as for a cell without task
    # no reference: psnr is compared with the sources (their features stored by the runner: a sampling σ)
    assert b.reference is None and all(e.sigma > 0 and e.sigma_sampling > 0 for e in b.entries)


def test_check_of_the_baseline_run_passes_on_four_cells(made, capsys):
    code, cases = check(made, made / "seeds" / "seed-0", "same")
    assert code == 0
    assert sorted(map(cell_of, cases)) == sorted(CELLS)
    assert all(c.find("failure") is None and c.find("error") is None for c in cases)
    table = capsys.readouterr().out
    assert "PASS (0 regressions, 0 improvements, 4 checked)" in table
    assert all(f"| {cell} | psnr ↑ | dB | " in table for cell in CELLS)


def test_worse_high_strength_cells_are_flagged_and_only_those(made, capsys):
    report = compare(Baseline.load(made / "b.json"), read_run(made / "worse"))
    verdicts = {c.entry.cell: c for c in report.comparisons}
    assert sorted(verdicts) == sorted(CELLS)
    for cell, c in verdicts.items():
        if cell.endswith("st0.7"):
            assert c.verdict == REGRESSION and c.delta < -c.tolerance
        else:  # the option does not touch strength 0.3: the same samples, the same value
            assert c.verdict == PASS and c.delta == 0
    code, cases = check(made, made / "worse", "worse")
    assert code == 1
    failed = sorted(cell_of(c) for c in cases if c.find("failure") is not None)
    assert failed == sorted(c for c in CELLS if c.endswith("st0.7"))
    assert "model m: options {} → {worse: 1.5, worse_above: 0.5}" in capsys.readouterr().out
    with capsys.disabled():
        shown = {c: (round(v.delta, 2), round(v.tolerance, 2)) for c, v in verdicts.items()}
        print(f"\n[agreement] ΔPSNR and tolerance (dB) per cell, strength 0.7 made worse: {shown}")


def test_other_source_images_are_refused(made, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(made / "seeds" / "seed-0", folder)
    store = RunStore(folder)
    arrays = store.load_task_inputs()
    store.write_task_inputs({**arrays, "images": 255 - arrays["images"]})
    code, cases = check(made, folder, "other")
    assert code == 2 and "task sources" in cases[0].find("error").text


def test_stored_source_features_give_a_paired_ci_against_the_sources(made, tmp_path):
    """Where run folders hold the sources' features (task_inputs.npz ``source/pixels/images``), the baseline keeps
    them in its sidecar, and the paired CI of a check is the paired bootstrap of PSNR against the sources."""
    runs = []
    for name in ("seed-0", "seed-1", "seed-2"):
        shutil.copytree(made / "seeds" / name, tmp_path / name)
        runs.append(tmp_path / name)
    shutil.copytree(made / "worse", tmp_path / "worse")
    for folder in [*runs, tmp_path / "worse"]:  # the runner stores the sources' features beside them
        arrays = RunStore(folder).load_task_inputs()
        np.testing.assert_array_equal(arrays["source/pixels/images"], arrays["images"].astype(np.float32) / 255.0)
    baseline, sidecar = build_baseline([read_run(r) for r in runs])
    assert sidecar["source/pixels/images"].shape == (8, *arrays["images"].shape[1:])
    assert all(e.sigma_sampling > 0 for e in baseline.entries)  # per-pair PSNR terms against the sources
    baseline.save(tmp_path / "b.json", sidecar)
    worse = read_run(tmp_path / "worse")
    report = compare(Baseline.load(tmp_path / "b.json"), worse)
    old_run, idx = read_run(runs[0]), bootstrap_indices(8, 200, seed=0)
    sources = worse.task_inputs()["images"] / 255.0
    worst = 0.0
    for c in report.comparisons:
        terms = [psnr_terms(r.features(c.entry.cell)["pixels"]["images"], sources) for r in (worse, old_run)]
        reps = terms[0][idx].mean(axis=1) - terms[1][idx].mean(axis=1)
        reps = reps - reps.mean() + c.delta
        lo, hi = np.quantile(reps, [0.025, 0.975])
        worst = max(worst, abs(min(lo, c.delta) - c.ci[0]), abs(max(hi, c.delta) - c.ci[1]))
        assert c.verdict == (REGRESSION if c.entry.strength == 0.7 else PASS)
    print(f"[agreement] paired CI of ΔPSNR vs brute-force paired bootstrap on the sources: max |Δ| = {worst:.2e} dB")
    assert worst < 1e-4


def test_entries_without_task_are_written_as_before():
    e = BaselineEntry("c", "m", "ddim", 4, 1.0, "fd", "fd", "ex", False, 1.0, 1.0, 0.1, [1.0, 1.1])
    assert not {"task", "strength", "controlnet_scale"} & set(e.to_json())
    assert BaselineEntry.from_json(e.to_json()) == e


def test_a_masks_region_gets_its_own_entry_and_a_paired_ci(tmp_path):
    """Inpainting with psnr on the unmasked region, psnr on the masked one and FD of the masked crops (against the
    sources' crops): three entries per cell, each judged with a paired CI on its own inputs; a run whose masked
    region changed (amp raised) regresses on the masked region's PSNR, moves its crops' FD, and keeps the unmasked
    region's PSNR."""
    doc = SUITE.format(options="").replace("task: img2img", "task: inpaint").replace("strength: [0.3, 0.7]", "")
    doc = doc.replace("  classes: 10", "  classes: 10\n  masks: {kind: centre, size: 0.5}")
    doc = doc.replace(
        "  - {name: psnr, extractor: pixels}",
        "  - {name: psnr, extractor: pixels}\n  - {name: psnr, extractor: pixels, options: {region: masked}}\n"
        "  - {name: fd, extractor: mnist-net, options: {region: masked}}",
    )
    (tmp_path / "s.yaml").write_text(doc)
    worse = doc.replace('"blend_adapter:make"', '"blend_adapter:make", options: {worse_above: 0.5, worse: 2.0}')
    (tmp_path / "w.yaml").write_text(worse)
    assert Runner(load_suite(tmp_path / "s.yaml"), tmp_path / "a", device="cpu").run().exit_code == 0
    assert Runner(load_suite(tmp_path / "w.yaml"), tmp_path / "w", device="cpu").run().exit_code == 0
    baseline, sidecar = build_baseline([read_run(tmp_path / "a")])
    assert {e.extractor for e in baseline.entries} == {"pixels", "pixels@masked", "mnist-net@masked"}
    assert "source/mnist-net@masked/features" in sidecar  # the sources' crops travel with the baseline
    baseline.save(tmp_path / "b.json", sidecar)
    same = compare(Baseline.load(tmp_path / "b.json"), read_run(tmp_path / "a"))
    assert same.comparisons and all(c.verdict == PASS and c.ci is not None for c in same.comparisons)
    worse_report = compare(Baseline.load(tmp_path / "b.json"), read_run(tmp_path / "w"), allow_other_seed=True)
    by_row = {(c.entry.cell, c.entry.extractor): c for c in worse_report.comparisons}
    for (cell, ex), c in by_row.items():
        assert c.ci is not None, (cell, ex)
        if ex == "mnist-net@masked":  # saturated noise crops: FD moved (either way), beyond its paired CI
            assert c.verdict != PASS and not c.ci[0] <= 0 <= c.ci[1], (cell, c.delta, c.ci)
        else:  # kept pixels unchanged; the regenerated region further from the source
            assert c.verdict == (PASS if ex == "pixels" else REGRESSION), (cell, ex, c.delta, c.ci)
