"""The end-of-run summary ``evalkit run`` prints: every metric with its CI and N, which cells tie with the
best of their column (and which one, if any, a CI says is best), which are at the real-vs-real floor, and
the best sampler per step count in words. Plain text for a terminal."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from evalkit.store import RunData
from evalkit.study.cells import cell_frame, column_keys, split_key
from evalkit.study.compare import DEFAULT_RESAMPLES, compare_with_intervals, fill_intervals
from evalkit.study.floors import floor_for
from evalkit.study.rank import PairTable, higher_is_better, mixed_n_note, n_groups, rank
from evalkit.study.task_cells import task_facets
from evalkit.study.words import cell_namer, column_sentences, floor_text, fmt, is_at_floor, label, percent

COSTS = ["s_per_image", "nfe"]
NOT_QUALITY = {"images_per_s", "s_per_image", "model_calls", "nfe", "ms_per_model_call", "peak_mem_mb"}
# Cost rows whose brackets are the spread of the timing repeats (fastest and slowest), not a confidence interval.
TIMING_SPREAD = {"s_per_image", "ms_per_model_call", "images_per_s"}


def summary_text(
    run: RunData,
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    cache_dir: str | Path | None = None,
    reference: dict[str, dict[str, np.ndarray]] | None = None,
) -> str:
    """The run's results as a terminal summary (module docstring); "(no results)" when there are none.

    The reference features (for FD, KID, PR, ...) are ``reference`` or, by default, found in the reference
    feature cache (``cache_dir``, else the default) where the run put them; without them those metrics keep
    only the CIs they stored."""
    df = run.results
    if df.empty:
        return "(no results)"
    opts = {"confidence": confidence, "n_resamples": n_resamples, "cache_dir": cache_dir, "reference": reference}
    pairs, intervals = compare_with_intervals(run, **opts)
    cells = cell_frame(fill_intervals(df, intervals))
    table, floors, run_id = PairTable(pairs), run.floors(), str(run.run_id)
    keys = dict.fromkeys(column_keys(df))  # "fd", or "fd@clip" where fd was measured on several extractors
    quality = [k for k in keys if split_key(k)[0] not in NOT_QUALITY and higher_is_better(k) is not None]
    ns = ", ".join(str(int(n)) for n in sorted(cells["n"].dropna().unique()))
    lines = [
        f"N={ns} samples per cell · seed {_seeds(df)} · {percent(confidence)} CIs in brackets (the metric's own, "
        f"else a bootstrap over the generated samples, {n_resamples} resamples); timing rows bracket the "
        "fastest and slowest of their repeats instead, not a CI",
        "In each column: * best (the CI of its difference to every other cell excludes 0); ≈ tied with the "
        "column's best (CI contains 0); f at the real-vs-real floor (not confidently worse than real samples).",
    ]
    notes = [mixed_n_note(cells), *_warnings(run)]
    lines += [f"note: {n}" for n in notes if n]
    for metric in quality:
        lines += ["", *_metric_block(cells, metric, table, floors, run_id)]
    for metric in [c for c in COSTS if c in set(df["metric"])]:
        lines += ["", *_metric_block(cells, metric, None, None, run_id)]
    if quality:
        lines += ["", *_sentences(cells, quality[0], table, floors, confidence)]
    return "\n".join(lines)


def _seeds(df: pd.DataFrame) -> str:
    return ", ".join(str(int(s)) for s in sorted(df["seed"].dropna().unique())) or "?"


def _warnings(run: RunData) -> list[str]:
    w = run.warnings
    return list(w() if callable(w) else w)


def _metric_block(
    cells: pd.DataFrame, metric: str, table: PairTable | None, floors: pd.DataFrame | None, run_id: str
) -> list[str]:
    """One metric: a grid per N, guidance and (task suites) task point (rows: cells' names; columns: steps),
    entries 'value [lo, hi] tags' (for timing rows [lo, hi] are the fastest and slowest repeats, and the title
    says so)."""
    hib = higher_is_better(metric)
    direction = "higher is better" if hib else "lower is better" if hib is False else "direction unknown"
    spread = "; brackets: fastest and slowest timing repeat, not a CI" if split_key(metric)[0] in TIMING_SPREAD else ""
    out = [f"{label(metric)} ({direction}{spread})"]
    name = cell_namer(cells, task=False)  # each grid is of one task point, named in its header
    for n, group in n_groups(cells.dropna(subset=[metric]) if metric in cells else cells.iloc[:0]):
        floor = floor_for(floors, metric, n, run_id)
        out.append(f"  N={n}" + (f" · {floor_text(floor, metric)}" if floor is not None else ""))
        for g, by_guidance in group.groupby("guidance", sort=True):
            for point, facet in task_facets(by_guidance):
                steps = sorted(facet["steps"].dropna().unique())
                tags = _tags(facet, metric, table, floors) if table is not None else {}
                rows = []
                for key, sub in facet.groupby(facet.apply(name, axis=1), sort=False):
                    by_steps = {r["steps"]: r for _, r in sub.iterrows()}
                    rows.append([key, *(_entry(by_steps.get(s), metric, tags) for s in steps)])
                title = f"guidance {float(g):g}" + (f" · {point}" if point else "")
                out += _grid([title, *(f"{s} steps" for s in steps)], rows)
    return out


def _tags(facet: pd.DataFrame, metric: str, table: PairTable, floors: pd.DataFrame | None) -> dict[str, str]:
    """cell_id → '*' (confidently best in its column), '≈' (tied with the best), plus 'f' (at the floor)."""
    tags: dict[str, str] = {}
    for _, col in facet.groupby("steps", sort=False):
        r = rank(col, metric, table)
        if r is None or r.runner_up is None:
            continue
        if r.confident:
            tags[r.best["cell_id"]] = "*"
        else:
            for c in [r.best, *r.measured_ties] if r.measured_ties else []:
                tags[c["cell_id"]] = "≈"
    for _, row in facet.iterrows():
        if is_at_floor(row, metric, floors):
            tags[row["cell_id"]] = tags.get(row["cell_id"], "") + "f"
    return tags


def _entry(row: pd.Series | None, metric: str, tags: dict[str, str]) -> str:
    if row is None or pd.isna(row[metric]):
        return "—"
    lo, hi = row.get(f"{metric}_lo"), row.get(f"{metric}_hi")
    text = fmt(row[metric]) + (f" [{fmt(lo)}, {fmt(hi)}]" if pd.notna(lo) and pd.notna(hi) else "")
    tag = tags.get(row["cell_id"], "")
    return f"{text} {tag}" if tag else text


def _grid(header: Sequence[str], rows: list[list[str]]) -> list[str]:
    """Plain-text columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(str(r[i])) for r in [list(header), *rows]) for i in range(len(header))]

    def line(r: Sequence[str]) -> str:
        return "    " + "   ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return [line(header), *(line(r) for r in rows)]


def _sentences(
    cells: pd.DataFrame, metric: str, table: PairTable, floors: pd.DataFrame | None, confidence: float
) -> list[str]:
    out = [f"Best {label(metric)} per step count (where the {percent(confidence)} CI of the difference excludes 0):"]
    multi_n = len(n_groups(cells)) > 1
    for n, group in n_groups(cells.dropna(subset=[metric])):
        for g, by_guidance in group.groupby("guidance", sort=True):
            for point, facet in task_facets(by_guidance):
                where = f"guidance {float(g):g}" + (f", {point}" if point else "") + (f", N={n}" if multi_n else "")
                out += [f"  {where}: {s}" for s in column_sentences(facet, metric, table, floors)]
    return out
