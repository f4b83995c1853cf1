"""Tidy results → the tables people read: pivots (sampler × steps per metric, faceted by guidance),
one row per cell, provenance captions, and CSV / parquet / markdown export."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from evalkit.errors import ConfigError
from evalkit.study.cells import COST_COLUMNS, cell_frame, column_keys, rows_of, split_key
from evalkit.study.rank import higher_is_better
from evalkit.study.task_cells import task_columns
from evalkit.study.words import LABELS, fmt, label

# LABELS, fmt, label, the directions (evalkit.study.rank.higher_is_better: the metric registry, plus the cost
# rows) and the cell frame live in evalkit.study (the run summary shares them).
__all__ = [
    "COST_COLUMNS",
    "LABELS",
    "QUALITY_ORDER",
    "THROUGHPUT_METRICS",
    "cell_table",
    "direction_word",
    "export",
    "fmt",
    "higher_is_better",
    "label",
    "pivot",
    "pivot_values",
    "pivots",
    "primary_metric",
    "provenance",
    "provenance_text",
    "quality_metrics",
    "short_id",
    "shown_task_columns",
    "throughput_metrics",
    "timing_words",
    "to_markdown",
]

# Display order: the headline quality metrics first, cost last.
QUALITY_ORDER = [
    "fd",
    "fd_inf",
    "kid",
    "cmmd",
    "is",
    "clip_score",
    "precision",
    "recall",
    "density",
    "coverage",
    "lpips_diversity",
    "lpips_paired",
    "psnr",
    "ssim",
    "ms_ssim",
    "vendi",
    "vendi_within",
    "aesthetic",
    "hpsv2",
    "image_reward",
    "pick_score",
]
THROUGHPUT_METRICS = [
    "images_per_s",
    "s_per_image",
    "model_calls",
    "nfe",
    "ms_per_model_call",
    "peak_mem_mb",
    "cost_per_image",  # where an adapter reports a cost (images, http)
]


def direction_word(metric: str) -> str:
    hib = higher_is_better(metric)
    return "higher is better" if hib else "lower is better" if hib is False else "direction unknown"


def quality_metrics(df: pd.DataFrame) -> list[str]:
    """Quality metric columns present (``fd``, or ``fd@clip`` where a row was measured on several extractors:
    :func:`evalkit.study.cells.column_keys`), in display order (unknown ones after the known)."""
    present = [k for k in dict.fromkeys(column_keys(df)) if split_key(k)[0] not in THROUGHPUT_METRICS]
    rank = {m: i for i, m in enumerate(QUALITY_ORDER)}
    return sorted(present, key=lambda k: rank.get(split_key(k)[0], len(rank)))


def throughput_metrics(df: pd.DataFrame) -> list[str]:
    present = set(df["metric"])
    return [m for m in THROUGHPUT_METRICS if m in present]


def primary_metric(df: pd.DataFrame) -> str | None:
    """The metric the summary ranks by: FD when present, else the first quality metric."""
    q = quality_metrics(df)
    return q[0] if q else None


def shown_task_columns(df: pd.DataFrame) -> list[str]:
    """The task columns (task, strength, controlnet_scale) that hold a value somewhere in ``df``: a task suite's
    rows tell cells apart by them, and an axis no task of the data has (all NaN) is left out."""
    return [c for c in task_columns(df.columns) if df[c].notna().any()]


def _row_keys(df: pd.DataFrame) -> list[str]:
    """Pivot rows: sampler and N, preceded by model and run_id only where the data has several, and by the task
    columns where the data has them (cells of another task or strength are other rows, never merged)."""
    keys = [k for k in ("run_id", "model") if df[k].nunique() > 1]
    return [*keys, *shown_task_columns(df), "sampler", "n"]


def _task_points_first(rows: list[tuple], index: list[str]) -> list[tuple]:
    """Rows grouped by their leading levels up to the last task column (in order of first appearance), so a task
    point's samplers sit together; unchanged where the index has no task column."""
    lead = [i for i, k in enumerate(index) if k in task_columns(index)]
    if not lead:
        return rows
    upto = max(lead) + 1
    first: dict[tuple, int] = {}

    def key(row: tuple) -> tuple:
        return tuple(None if pd.isna(v) else v for v in row[:upto])  # NaN != NaN: as None, it groups

    for row in rows:
        first.setdefault(key(row), len(first))
    return sorted(rows, key=lambda row: first[key(row)])


def pivot(df: pd.DataFrame, metric: str, *, value: str = "value", index: Sequence[str] | None = None) -> pd.DataFrame:
    """Sampler × steps for one metric, columns faceted by guidance: columns are (guidance, steps).

    Rows are (``sampler``, ``n``) — N is part of every index: values at another N are other cells, never
    merged — with ``run_id`` / ``model`` levels in front when the data holds several, then a task suite's
    ``task`` / ``strength`` / ``controlnet_scale`` (each task point's samplers together); samplers keep the order
    of the suite. ``value`` may be "std", "ci_low" or "ci_high" instead.
    """
    return pivot_values(df, metric, (value,), index=index)[value]


def pivot_values(
    df: pd.DataFrame,
    metric: str,
    values: Sequence[str] = ("value", "std", "ci_low", "ci_high"),
    *,
    index: Sequence[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """:func:`pivot` for several value columns at once (one grouping pass): value name → pivot."""
    sub = rows_of(df, metric)
    if sub.empty:
        return {v: pd.DataFrame() for v in values}
    sub = sub.assign(n=pd.to_numeric(sub["n"], errors="coerce").round().astype("Int64"))
    index = list(index) if index is not None else _row_keys(df)
    grouped = sub.groupby([*index, "guidance", "steps"], sort=False, dropna=False)[list(values)].first()
    wide = grouped.unstack(["guidance", "steps"])
    rows = list(dict.fromkeys(grouped.index.droplevel(["guidance", "steps"])))  # the suite's order
    rows = _task_points_first([r if isinstance(r, tuple) else (r,) for r in rows], index) if len(index) > 1 else rows
    order = pd.MultiIndex.from_tuples(rows, names=index) if len(index) > 1 else pd.Index(rows, name=index[0])
    wide = wide.reindex(order)
    return {v: wide[v].sort_index(axis=1) for v in values}


def pivots(df: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """One pivot per metric present (quality first, then throughput)."""
    return {m: pivot(df, m) for m in quality_metrics(df) + throughput_metrics(df)}


def cell_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell (N part of its key): ``cell_id``, a column per metric value, ``<metric>_std/_lo/_hi``
    for spreads, and the cell's cost (s_per_image, nfe, model_calls) — the shape plots and the summary want."""
    return cell_frame(df)


def provenance(df: pd.DataFrame, metric: str | None = None) -> dict[str, str]:
    """What the numbers were computed with (N, seeds, extractor, weights id, mode, runs), as text."""
    sub = df if metric is None else rows_of(df, metric)

    def uniq(col: str, fmt: Callable[[Any], str] = str) -> str:
        vals = [v for v in dict.fromkeys(sub[col].dropna()) if str(v) != ""]
        return ", ".join(fmt(v) for v in vals) if vals else "—"

    return {
        "n": uniq("n", lambda v: f"{int(v)}"),
        "seeds": uniq("seed", lambda v: f"{int(v)}"),
        "extractor": uniq("extractor"),
        "weights_id": uniq("weights_id", short_id),
        "mode": uniq("mode"),
        "runs": uniq("run_id"),
        "device": uniq("device"),
    }


def timing_words(df: pd.DataFrame) -> str:
    """Where the seconds per image came from, for captions: measured by evalkit on its device, or reported by the
    adapter (rows with ``cost_source`` reported: a manifest's seconds, a service's latency), or both (its models)."""
    rows = df[df["metric"] == "s_per_image"]
    source = rows["cost_source"] if "cost_source" in rows else pd.Series("", index=rows.index, dtype=object)
    reported = source.astype(object).fillna("") == "reported"
    measured = f"time measured on {provenance(df)['device']}"
    if not reported.any():
        return measured
    if reported.all():
        return "time reported by the adapter (seconds per image as the manifest or the service says), not measured"
    who = "run_id" if "run_id" in rows and rows["run_id"].nunique() > 1 else "model"  # the runs, or the models
    named = ", ".join(dict.fromkeys(rows.loc[reported, who].astype(str)))
    return f"{measured}, but reported by the adapter for {named} (not measured: not like for like)"


def short_id(weights_id: str, keep: int = 12) -> str:
    """'sha256:<64 hex>' → 'sha256:<first 12>…' for captions; the environment section shows it whole."""
    kind, sep, digest = str(weights_id).partition(":")
    if sep and len(digest) > keep + 4:
        return f"{kind}:{digest[:keep]}…"
    return str(weights_id)


def provenance_text(df: pd.DataFrame, metric: str | None = None) -> str:
    p = provenance(df, metric)
    parts = [f"N={p['n']} per cell", f"seed {p['seeds']}"]
    if p["extractor"] != "—":
        parts += [f"extractor {p['extractor']}", f"weights {p['weights_id']}", f"mode {p['mode']}"]
    else:
        parts.append(f"measured on {p['device']}")
    return " · ".join(parts)


def to_markdown(df: pd.DataFrame, *, index: bool = True) -> str:
    """A GitHub-flavoured markdown table (no extra dependency); pivot columns read 'g=1 steps=4'."""
    frame = _flat_columns(df)
    frame = frame.reset_index() if index and not isinstance(frame.index, pd.RangeIndex) else frame
    headers = [" / ".join(map(str, c)) if isinstance(c, tuple) else str(c) for c in frame.columns]
    lines = [
        "| " + " | ".join(_md_cell(h) for h in headers) + " |",
        "|" + "|".join("---:" if pd.api.types.is_numeric_dtype(frame[c]) else ":---" for c in frame.columns) + "|",
    ]
    for row in frame.itertuples(index=False):
        lines.append("| " + " | ".join(_md_cell(fmt(v)) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def export(
    df: pd.DataFrame, out_dir: str | os.PathLike, formats: Sequence[str] = ("csv", "parquet", "md")
) -> list[Path]:
    """Write the tidy table and every metric's pivot as CSV / parquet / markdown; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    tables = {"results": df, **{f"pivot_{m}": p for m, p in pivots(df).items()}}
    for name, table in tables.items():
        flat = _flat_columns(table) if name != "results" else table
        for f in formats:
            path = out / f"{name}.{f}"
            if f == "csv":
                flat.to_csv(path, index=name != "results")
            elif f == "parquet":
                flat.to_parquet(path, index=name != "results")
            elif f == "md":
                path.write_text(to_markdown(flat, index=name != "results"))
            else:
                raise ConfigError(f"unknown export format {f!r}; expected csv, parquet or md")
            written.append(path)
    return written


def _flat_columns(table: pd.DataFrame) -> pd.DataFrame:
    """(guidance, steps) columns → 'g=<guidance> steps=<steps>' strings (CSV/parquet want flat names)."""
    flat = table.copy()
    if isinstance(flat.columns, pd.MultiIndex):
        if list(flat.columns.names) == ["guidance", "steps"]:
            flat.columns = [f"g={g:g} steps={s}" for g, s in flat.columns]
        else:
            flat.columns = [" / ".join(map(str, c)) for c in flat.columns]
    return flat
