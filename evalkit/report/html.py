"""The self-contained HTML report: one file, no network, every user string escaped.

Plots and sample grids are inline ``data:`` images, CSS and the small sort script are inline, and a
Content-Security-Policy forbids any fetch — so even a malicious prompt that slipped past escaping
could neither load nor run anything (the one script runs by its hash).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

import evalkit
from evalkit.report import grids as grids_mod
from evalkit.report import htmltables, plots
from evalkit.report.baseline import deltas, load_baseline
from evalkit.report.closest_pairs import closest_pair_sections
from evalkit.report.data import StudyData, load_study
from evalkit.report.frontier import headline, summary_sentences
from evalkit.report.prompt_scores import prompt_sections
from evalkit.report.tables import (
    fmt,
    label,
    primary_metric,
    provenance_text,
    quality_metrics,
    throughput_metrics,
    timing_words,
)
from evalkit.report.task_view import strength_figure, task_sections
from evalkit.store import RunData, read_runs
from evalkit.study.cells import SEP
from evalkit.study.rank import PairTable

TEMPLATES = Path(__file__).with_name("templates")
# every report has these; "prompts" only where a cell stored per-image scores of prompts, "memorisation" only where
# a cell ran the memorisation metric, "tasks" only where a run is a task suite's (it kept the task inputs)
SECTIONS = ["summary", "plots", "tables", "grids", "baseline", "environment"]


@dataclass
class Figure:
    """A plot as the template shows it."""

    name: str
    title: str
    caption: str
    src: str
    plot: plots.Plot


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt
    return env


# -- sections ----------------------------------------------------------------------------------------
def build_figures(
    df: pd.DataFrame, cells: pd.DataFrame, pairs: PairTable | None = None, floors: pd.DataFrame | None = None
) -> list[Figure]:
    """Every plot the data supports: Pareto vs s/image and vs NFE, guidance sweep, metrics vs steps, fidelity vs
    strength (task suites), throughput. ``pairs``/``floors``: the comparisons that decide the frontier, the floors
    drawn as bands."""
    metric = primary_metric(df)
    out: list[Figure] = []
    if metric is None:
        return out
    prov = provenance_text(df, metric)

    def add(name: str, title: str, caption: str, plot: plots.Plot | None) -> None:
        if plot is not None:
            out.append(Figure(name, title, caption, plots.png_data_uri(plot.figure), plot))

    frontier_note = (
        "Dashed line and circles: the Pareto frontier, the cells that no cell at least as cheap beats with a CI of "
        "the difference clear of 0 (ties stay on it); panels never mix N; grey band: the real-vs-real noise floor "
        "where the run measured it; points labelled by steps"
    )
    timed = timing_words(df)
    add(
        "pareto_time",
        f"{label(metric)} vs seconds per image{' (reported)' if timed.startswith('time reported') else ''}",
        f"{frontier_note}; {timed}. {prov}.",
        plots.pareto_plot(cells, metric, "s_per_image", pairs, floors),
    )
    add(
        "pareto_nfe",
        f"{label(metric)} vs NFE",
        f"{frontier_note}; NFE = network evaluations per image (×2 under classifier-free guidance). {prov}.",
        plots.pareto_plot(cells, metric, "nfe", pairs, floors),
    )
    other = next((m for m in ("clip_score", "is") if m in cells and m != metric), None)
    if other:
        add(
            "guidance",
            f"Guidance sweep: {label(other)} vs {label(metric)}",
            f"One panel per step count; points labelled by guidance scale. {prov}.",
            plots.guidance_plot(cells, metric, other),
        )
    add(
        "steps",
        "Metrics vs steps",
        f"Colour: sampler; dash: guidance scale; error bars: 95% CI where computed, else ±std; grey band: the "
        f"real-vs-real floor. {prov}.",
        plots.steps_plot(cells, quality_metrics(df), floors),
    )
    add("strength", *strength_figure(df, cells))  # task suites with several strengths
    add(
        "throughput",
        "Throughput",
        f"Images per second ({timed}; a measured time excludes the warm-up). {provenance_text(df, 'images_per_s')}.",
        plots.throughput_plot(cells),
    )
    return out


def _floor_key(f: pd.Series, multi: pd.Series) -> str:
    """The metric column a floor row belongs to: ``fd``, or ``fd@clip`` where fd has floors on several extractors."""
    metric = str(f["metric"])
    return f"{metric}{SEP}{f['extractor']}" if multi.get(metric, 1) > 1 else metric


def build_summary(study: StudyData, runs: list[RunData]) -> dict[str, Any]:
    """The summary section: notes (mixed N, the runs' warnings), the headline and, per N and guidance, the best
    sampler per step count and per budget — each claim backed by a CI, ties said as ties — and the floors."""
    df, cells = study.results, study.cells
    metric = primary_metric(df)
    failed = [
        {"run": r.run_id, "cell_id": c.get("cell_id", "?"), "error": _last_line(c.get("error", ""))}
        for r in runs
        for c in r.failed_cells()
    ]
    total = sum(int(r.manifest.get("status", {}).get("total", len(r.cells))) for r in runs)
    multi = study.floors.groupby("metric")["extractor"].nunique() if not study.floors.empty else pd.Series()
    floors = [
        f"{label(_floor_key(f, multi))} at N={int(f['n'])}{f' (run {f.run_id})' if len(runs) > 1 else ''}: "
        f"{fmt(f['median'])} (range {fmt(f['low'])}–{fmt(f['high'])} over {int(f['draws'])} draws)"
        for _, f in study.floors.iterrows()
        if f["available"]
    ]
    return {
        "metric": label(metric) if metric else None,
        "notes": study.notes,
        "facets": summary_sentences(cells, metric, study.pairs, study.floors) if metric else [],
        "multi_n": cells["n"].nunique() > 1 if "n" in cells else False,
        "headline": headline(cells, metric, study.pairs) if metric else "",
        "provenance": provenance_text(df, metric) if metric else "",
        "floors": floors,
        "floor_method": str(study.floors.attrs.get("method", "")) if floors else "",
        "n_cells": len(cells),
        "n_total": total,
        "failed": failed,
    }


def _last_line(text: str) -> str:
    lines = [ln for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def build_environment(run: RunData) -> dict[str, Any]:
    m = run.manifest
    env = m.get("environment", {}) or {}
    config = m.get("config", {}) or {}
    facts = [
        ("run id", run.run_id),
        ("suite", m.get("suite", "")),
        ("description", m.get("description", "")),
        ("run folder", str(run.path)),
        ("config hash", m.get("config_hash", "")),
        ("created", m.get("created_at", "")),
        ("updated", m.get("updated_at", "")),
        ("evalkit", m.get("evalkit_version", "")),
        ("git commit", m.get("git_commit") or "unknown"),
        ("device", env.get("device", "")),
        ("python", env.get("python", "")),
        ("torch", env.get("torch", "")),
        ("platform", env.get("platform", "")),
        ("CPU count", env.get("cpu_count", "")),
        ("samples per cell (N)", config.get("samples", "")),
        ("seed", config.get("seed", "")),
        ("conditions", json.dumps(config["conditions"], sort_keys=True) if config.get("conditions") else ""),
        ("cells", _status_text(m.get("status", {}))),
    ]
    ref = m.get("reference") or {}
    return {
        "run_id": run.run_id,
        "facts": [(k, str(v)) for k, v in facts if v not in ("", None)],
        "reference": [(k, str(v)) for k, v in ref.items()],
        "extractors": [
            (name, str(e.get("weights_id", "")), str(e.get("mode", "")))
            for name, e in (m.get("extractors") or {}).items()
        ],
        "packages": sorted((env.get("packages") or {}).items()),
        "config": json.dumps(config, indent=2, sort_keys=True, default=str),
    }


def _status_text(status: dict[str, Any]) -> str:
    if not status:
        return ""
    return f"{status.get('done', '?')} done, {status.get('failed', 0)} failed, {status.get('total', '?')} total"


VERDICT_ORDER = {"error": 0, "worse": 1, "better": 2, "changed": 3, "within noise": 4, "unchanged": 5}


def build_baseline(
    df: pd.DataFrame, loaded: tuple[pd.DataFrame, str] | None, runs: list[RunData] | None = None
) -> dict[str, Any] | None:
    """Deltas against the baseline: what moved beyond noise up front (worst first), all of it below."""
    if loaded is None:
        return None
    base, name = loaded
    d = deltas(df, base, runs=runs)
    if not d.empty:
        d = (
            d.assign(_order=d["verdict"].map(VERDICT_ORDER), _size=-d["rel"].abs())
            .sort_values(["_order", "_size"], kind="stable")
            .drop(columns=["_order", "_size"])
        )
    moved = d[d["verdict"].isin(["error", "worse", "better", "changed"])] if not d.empty else d
    matched = len(d.drop_duplicates(["model", "sampler", "steps", "guidance", "task_point", "metric"])) if len(d) else 0
    return {
        "name": name,
        "counts": sorted(d["verdict"].value_counts().items()) if not d.empty else [],
        "moved": htmltables.deltas_table(moved, name, df, "table-deltas-moved", "Moved beyond noise")
        if not moved.empty
        else None,
        "all": htmltables.deltas_table(d, name, df, "table-deltas", "All deltas") if not d.empty else None,
        "unmatched": len(base) - matched,
    }


# -- the page ----------------------------------------------------------------------------------------
def _read_asset(name: str) -> str:
    return (TEMPLATES / name).read_text()


def csp(script: str) -> str:
    """No fetches of any kind; inline styles; only our own script, by hash."""
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    return (
        f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
        "base-uri 'none'; form-action 'none'"
    )


def render_report(
    runs: Sequence[str | os.PathLike | RunData], *, baseline: str | os.PathLike | None = None, title: str | None = None
) -> tuple[str, list[Figure]]:
    """The report's HTML text and its figures (so a caller can also save them as files)."""
    runs = read_runs(runs)
    loaded_baseline = load_baseline(baseline) if baseline is not None else None  # bad input fails fast
    study = load_study(runs)
    df, cells = study.results, study.cells
    figures = build_figures(df, cells, pairs=study.pairs, floors=study.floors)
    script = _read_asset("report.js")
    suites = ", ".join(dict.fromkeys(str(r.manifest.get("suite") or r.path.name) for r in runs))
    context = {
        "title": title or f"evalkit report — {suites}",
        "runs": [r.run_id for r in runs],
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "evalkit_version": evalkit.__version__,
        "summary": build_summary(study, runs),
        "figures": figures,
        "tables": [
            htmltables.pivot_table(df, m, study.pairs, study.floors)
            for m in quality_metrics(df) + throughput_metrics(df)
        ],
        "tidy": htmltables.tidy_table(df) if not df.empty else None,
        "grids": [
            {
                "run": r.run_id,
                "sampler_steps": grids_mod.sampler_steps_grids(r),
                "guidance_seed": grids_mod.guidance_seed_grids(r),
            }
            for r in runs
        ],
        "prompts": [{"run": r.run_id, "cells": prompt_sections(r)} for r in runs],
        "memorisation": [{"run": r.run_id, "cells": closest_pair_sections(r)} for r in runs],
        "tasks": [{"run": r.run_id, "tables": task_sections(r)} for r in runs],
        "baseline": build_baseline(df, loaded_baseline, runs),
        "environments": [build_environment(r) for r in runs],
        "css": _read_asset("report.css"),
        "script": script,
        "csp": csp(script),
    }
    return _env().get_template("report.html.j2").render(**context), figures


def write_report(
    runs: Sequence[str | os.PathLike | RunData] | str | os.PathLike,
    out: str | os.PathLike,
    *,
    baseline: str | os.PathLike | None = None,
    title: str | None = None,
    save_plots: bool = False,
) -> Path:
    """Write the report to ``out`` (one HTML file); with ``save_plots``, also PNG + SVG of every plot
    in ``<out stem>_plots/``. Returns the HTML path."""
    if isinstance(runs, (str, os.PathLike, RunData)):
        runs = [runs]
    html, figures = render_report(runs, baseline=baseline, title=title)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, out)
    if save_plots:
        folder = out.with_name(f"{out.stem}_plots")
        for f in figures:
            plots.save_figure(f.plot.figure, folder / f.name)
    return out
