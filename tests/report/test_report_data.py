"""Report data layer on a synthetic run: loading, pivots, the frontier, export, baselines.

``make_run`` writes a realistic run folder with :class:`RunStore` (the other report tests import it):
4 samplers × 3 steps × 2 guidance, FD falling with steps, heun twice the model calls per step, one
failed cell, random sample images and a prompt ``<script>alert(1)</script>``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from evalkit.report import cell_table, export, load_results, pareto_front, pivot, to_markdown
from evalkit.report.baseline import deltas, load_baseline
from evalkit.report.frontier import best_per_steps, summary_sentences
from evalkit.store import RunStore, tidy_frame

SAMPLERS = {"ddim": (60.0, 1), "dpmpp_2m": (35.0, 1), "euler": (50.0, 1), "heun": (25.0, 2)}  # FD scale, calls/step
STEPS = [4, 8, 16]
GUIDANCE = [1.0, 3.0]
EVIL = "<script>alert(1)</script>"
K = 12  # stored samples per cell


def cost(sampler: str, steps: int, guidance: float) -> tuple[int, int, float]:
    calls = steps * SAMPLERS[sampler][1] - (1 if sampler == "heun" else 0)
    nfe = calls * (2 if guidance > 1 else 1)
    return calls, nfe, 0.002 * nfe


def fd_value(sampler: str, steps: int, guidance: float) -> float:
    return SAMPLERS[sampler][0] * 8 / steps + 5.0 + (2.0 if guidance > 1 else 0.0)


def _rows(run_id: str, sampler: str, steps: int, g: float, rng: np.random.Generator) -> list[dict]:
    calls, nfe, spi = cost(sampler, steps, g)
    base = {
        "run_id": run_id,
        "suite": "synthetic",
        "model": "mnist",
        "sampler": sampler,
        "steps": steps,
        "guidance": g,
        "n": 200,
        "seed": 0,
        "device": "cpu",
        "config_hash": "abc123",
        "model_calls": calls,
        "nfe": nfe,
        "s_per_image": spi,
    }
    quality = {"extractor": "mnist-net", "weights_id": "sha256:" + "ab" * 32, "mode": "clean"}
    fd = fd_value(sampler, steps, g)
    rows = [
        {**base, **quality, "metric": "fd", "value": fd, "std": math.nan, "ci_low": fd - 1.0, "ci_high": fd + 1.5},
        {**base, **quality, "metric": "kid", "value": fd / 1000, "std": 0.001, "ci_low": math.nan, "ci_high": math.nan},
        {
            **base,
            **quality,
            "metric": "is",
            "value": 5 + g + steps / 8 + rng.normal(0, 0.05),
            "std": 0.1,
            "ci_low": math.nan,
            "ci_high": math.nan,
        },
        {
            **base,
            **quality,
            "metric": "precision",
            "value": 0.9 - 1 / steps,
            "std": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
        },
        {
            **base,
            **quality,
            "metric": "recall",
            "value": 0.8 - 1 / steps - g / 50,
            "std": math.nan,
            "ci_low": math.nan,
            "ci_high": math.nan,
        },
    ]
    through = {
        "images_per_s": 1 / spi,
        "s_per_image": spi,
        "model_calls": calls,
        "nfe": nfe,
        "ms_per_model_call": 2.0,
        "peak_mem_mb": 120.0,
    }
    nan = {"std": math.nan, "ci_low": math.nan, "ci_high": math.nan, "extractor": "", "weights_id": "", "mode": ""}
    rows += [{**base, **nan, "metric": m, "value": v} for m, v in through.items()]
    return rows


def make_run(
    root: Path, *, run_id: str = "synthetic-20250101T000000Z", failed: bool = True, fd_shift: float = 0.0
) -> Path:
    """Write a synthetic but realistic run folder at ``root`` and return it."""
    rng = np.random.default_rng(0)
    store = RunStore(root)
    cells, all_rows = [], []
    prompts = np.array([EVIL if i == 3 else f"digit {i % 10} & <b>friends</b>" for i in range(K)])
    for sampler in SAMPLERS:
        for steps in STEPS:
            for g in GUIDANCE:
                cell_id = f"mnist__{sampler}__s{steps}__g{g:g}"
                cells.append({"cell_id": cell_id, "model": "mnist", "sampler": sampler, "steps": steps, "guidance": g})
                rows = _rows(run_id, sampler, steps, g, rng)
                for r in rows:
                    if r["metric"] == "fd":
                        r["value"] += fd_shift
                all_rows += rows
                digits = rng.integers(0, 256, size=(K, 1, 32, 32), dtype=np.uint8)
                samples = {
                    "images": np.repeat(digits, 3, axis=1),
                    "indices": np.arange(K, dtype=np.int64),
                    "labels": np.arange(K, dtype=np.int64) % 10,
                    "prompts": prompts,
                }
                calls, nfe, spi = cost(sampler, steps, g)
                record = {
                    **cells[-1],
                    "n": 200,
                    "seed": 0,
                    "batch_size": 200,
                    "device": "cpu",
                    "timings": {"generate_s": spi * 200, "extract_s": 0.1, "metrics_s": 0.1, "total_s": 1.0},
                    "model_calls": calls,
                    "nfe": nfe,
                    "images_per_s": 1 / spi,
                    "s_per_image": spi,
                    "ms_per_model_call": 2.0,
                    "peak_mem_mb": 120.0,
                }
                store.write_cell(
                    cell_id, record, features={"mnist-net/features": np.zeros((2, 2))}, rows=rows, samples=samples
                )
    if failed:
        cells.append(
            {"cell_id": "mnist__unipc__s4__g1", "model": "mnist", "sampler": "unipc", "steps": 4, "guidance": 1.0}
        )
        store.write_failed_cell(
            "mnist__unipc__s4__g1", cells[-1], "Traceback (most recent call last):\nRuntimeError: <b>boom</b> in unipc"
        )
    store.write_results(tidy_frame(all_rows))
    store.write_manifest(
        {
            "run_id": run_id,
            "suite": "synthetic",
            "suite_file": "suites/synthetic.yaml",
            "description": "A synthetic <em>study</em> for the report tests",
            "config_hash": "abc123",
            "config": {
                "name": "synthetic",
                "seed": 0,
                "samples": 200,
                "conditions": {"classes": 10},
                "samplers": list(SAMPLERS),
                "steps": STEPS,
                "guidance": GUIDANCE,
            },
            "created_at": "2025-01-01T00:00:00+00:00",
            "updated_at": "2025-01-01T00:10:00+00:00",
            "evalkit_version": "0.1.0",
            "git_commit": "deadbeef",
            "environment": {
                "python": "3.11.2",
                "platform": "Linux",
                "device": "cpu (x86_64, 2 threads)",
                "torch": "2.14.1",
                "cpu_count": 2,
                "packages": {"torch": "2.14.1", "numpy": "2.4"},
            },
            "cells": cells,
            "reference": {"name": "mnist-heldout", "fingerprint": "f00d", "n": 1000},
            "extractors": {"mnist-net": {"weights_id": "sha256:" + "ab" * 32, "mode": "clean"}},
            "status": {"done": 24, "failed": int(failed), "total": 24 + int(failed)},
        }
    )
    return root


_SHARED: dict[tuple, Path] = {}


def shared_run(tmp_path_factory: pytest.TempPathFactory, **kwargs) -> Path:
    """``make_run(**kwargs)`` once per test session (runs are only read): writing one takes seconds."""
    key = tuple(sorted(kwargs.items()))
    if key not in _SHARED:
        _SHARED[key] = make_run(tmp_path_factory.mktemp("shared-run") / "run", **kwargs)
    return _SHARED[key]


WORSE = {"run_id": "worse", "failed": False, "fd_shift": 5.0}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return shared_run(tmp_path_factory)


def test_load_results_concatenates_runs(run_dir, tmp_path_factory):
    df = load_results([run_dir, shared_run(tmp_path_factory, **WORSE)])
    assert set(df.run_id) == {"synthetic-20250101T000000Z", "worse"}
    assert len(df) == 2 * 24 * 11
    assert df["steps"].dtype.name == "Int64" and df["guidance"].dtype == float


def test_pivot_is_sampler_by_steps_faceted_by_guidance(run_dir):
    df = load_results(run_dir)
    p = pivot(df, "fd")
    assert list(p.index) == [(s, 200) for s in SAMPLERS]  # suite order, not alphabetical; N in every index
    assert list(p.columns) == [(g, s) for g in GUIDANCE for s in STEPS]
    assert p.loc[("heun", 200), (3.0, 16)] == pytest.approx(fd_value("heun", 16, 3.0))
    assert (p.diff(axis=1)[[(1.0, 8), (1.0, 16)]] < 0).all().all()  # FD falls with steps


def test_cell_table_has_one_row_per_cell_with_cost(run_dir):
    cells = cell_table(load_results(run_dir))
    assert len(cells) == 24
    row = cells[(cells.sampler == "heun") & (cells.steps == 4) & (cells.guidance == 3.0)].iloc[0]
    assert (row.nfe, row.model_calls) == (14, 7)
    assert row.fd_lo == pytest.approx(row.fd - 1.0) and math.isnan(row.fd_std)


def test_frontier_and_best_per_steps(run_dir):
    cells = cell_table(load_results(run_dir))
    g1 = cells[cells.guidance == 1.0]
    front = pareto_front(g1, "nfe", "fd")
    assert list(front.nfe) == sorted(front.nfe)
    # Off the frontier exactly where a cell at most as costly is confidently better: with only the rows' own CIs
    # (FD − 1, FD + 1.5), where its CI lies wholly below this cell's.
    on = set(front.cell_id)
    for _, r in g1.iterrows():
        beaten = g1[(g1.nfe <= r.nfe) & (g1.fd_hi < r.fd_lo)]
        assert (r.cell_id in on) == beaten.empty, r.cell_id
    best = best_per_steps(g1, "fd")
    assert set(best.sampler) == {"heun"} and best.confident.all()
    g1_summary = summary_sentences(cells, "fd")[0]
    assert g1_summary["sentences"][0] == (
        "At 4 steps, heun has the best FD: 55, ahead of dpmpp_2m (75; ΔFD −20; their separate 95 % CIs do not overlap)."
    )
    nfe_budget = g1_summary["budgets"][0]
    assert nfe_budget["cost"] == "NFE per image"
    assert nfe_budget["lines"][0] == "≤ 4 NFE per image: dpmpp_2m at 4 steps (FD 75)"
    assert len(nfe_budget["lines"]) == front.nfe.nunique()  # a line per cost level of the frontier


def test_markdown_and_csv_export(run_dir, tmp_path):
    df = load_results(run_dir)
    md = to_markdown(pivot(df, "fd"))
    lines = md.splitlines()
    assert lines[0].startswith("| sampler | n | g=1 steps=4 | g=1 steps=8 |") and len(lines) == 2 + len(SAMPLERS)
    assert "| heun | 200 |" in md
    paths = export(df, tmp_path / "out")
    names = {p.name for p in paths}
    assert {"results.csv", "results.parquet", "results.md", "pivot_fd.csv", "pivot_fd.md"} <= names
    back = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(back) == len(df) and set(back.metric) == set(df.metric)
    fd = pd.read_csv(tmp_path / "out" / "pivot_fd.csv", index_col=[0, 1])
    assert fd.loc[("dpmpp_2m", 200), "g=1 steps=4"] == pytest.approx(fd_value("dpmpp_2m", 4, 1.0))
    assert pd.read_parquet(tmp_path / "out" / "pivot_fd.parquet").shape == (4, 6)


def test_baseline_json_and_run_folder(run_dir, tmp_path, tmp_path_factory):
    df = load_results(run_dir)
    doc = {
        "cells": {
            "mnist__ddim__s4__g1": {"fd": {"value": fd_value("ddim", 4, 1.0) - 10, "noise": 1.0, "direction": "lower"}},
            "custom": {"model": "mnist", "sampler": "heun", "steps": 16, "guidance": 3.0, "metrics": {"is": 100.0}},
        }
    }
    (tmp_path / "b.json").write_text(json.dumps(doc))
    base, _ = load_baseline(tmp_path / "b.json")
    d = deltas(df, base).set_index("metric")
    assert d.loc["fd", "delta"] == pytest.approx(10.0) and d.loc["fd", "verdict"] == "worse"
    assert d.loc["is", "verdict"] == "worse"  # IS: higher is better, and 100 is far above
    worse_run = shared_run(tmp_path_factory, **WORSE)
    base, name = load_baseline(run_dir)
    d = deltas(load_results(worse_run), base)
    assert d[d.metric == "fd"].delta.to_numpy() == pytest.approx(np.full(24, 5.0))
    assert set(d[d.metric == "fd"].verdict) == {"worse"} and "synthetic-20250101T000000Z" in name
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_baseline(tmp_path / "missing.json")


def test_evalkit_baseline_file_is_read_from_its_entries():
    """The committed CI baseline, as `evalkit baseline` wrote it: one row per entry, the gate's σ as noise."""
    path = Path(__file__).resolve().parents[2] / "baselines" / "ci.json"
    doc = json.loads(path.read_text())
    base, name = load_baseline(path)
    assert len(base) == len(doc["entries"]) > 0 and "ci" in name
    for e in doc["entries"]:
        row = base[
            (base.sampler == e["sampler"])
            & (base.steps == e["steps"])
            & (base.metric == e["metric"])
            & (base.guidance == e["guidance"])
            & (base.model == e["model"])
        ]
        assert len(row) == 1 and row.value.iloc[0] == e["value"] and row.direction.iloc[0] == e["direction"]
        assert row.noise.iloc[0] == max(e["sigma"], e.get("sigma_sampling", 0.0)) > 0
