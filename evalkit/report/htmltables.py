"""DataFrames → table models the template renders (header cells with sort columns, body cells with
display text, a numeric sort key and the best value per column marked). Text only: the template
escapes everything."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evalkit.report.tables import (
    direction_word,
    fmt,
    higher_is_better,
    label,
    pivot_values,
    provenance_text,
)


@dataclass
class Th:
    text: str
    col: int | None = None  # body column this header sorts, None when not sortable
    colspan: int = 1
    rowspan: int = 1


@dataclass
class Td:
    text: str
    sort: str = ""  # machine-readable value for the sort script
    sub: str = ""  # second, smaller line (spread)
    title: str = ""
    cls: str = ""


@dataclass
class HtmlTable:
    id: str
    title: str
    caption: str
    head: list[list[Th]]
    body: list[list[Td]] = field(default_factory=list)


def _sort_key(v: Any) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return "" if math.isnan(f) else repr(f)


def pivot_table(df: pd.DataFrame, metric: str) -> HtmlTable:
    """Sampler rows × (guidance, steps) columns for one metric; the best value per column in bold."""
    frames = pivot_values(df, metric)  # value/std/ci_low/ci_high share one index and column order
    p = frames["value"]
    values, lo, hi, sd = (frames[k].to_numpy(dtype=float) for k in ("value", "ci_low", "ci_high", "std"))
    hib = higher_is_better(metric)
    names = list(p.index.names)
    cols = list(p.columns)
    guidances = list(dict.fromkeys(g for g, _ in cols))
    head = [
        [Th(str(n), col=i, rowspan=2) for i, n in enumerate(names)]
        + [Th(f"guidance {g:g}", colspan=sum(1 for c in cols if c[0] == g)) for g in guidances],
        [Th(f"{s} steps", col=len(names) + j) for j, (_, s) in enumerate(cols)],
    ]
    best = [_best(values[:, j], hib) for j in range(len(cols))]
    body = []
    for i, key in enumerate(p.index):
        keys = key if isinstance(key, tuple) else (key,)
        cells = [Td(str(k), sort=str(k)) for k in keys]
        for j in range(len(cols)):
            v = values[i, j]
            sub, tip = _spread(lo[i, j], hi[i, j], sd[i, j])
            cells.append(Td(fmt(v), sort=_sort_key(v), sub=sub, title=tip, cls="best" if v == best[j] else ""))
        body.append(cells)
    caption = f"{label(metric)} ({direction_word(metric)}; best per column in bold) · {provenance_text(df, metric)}"
    return HtmlTable(id=f"table-{metric}", title=label(metric), caption=caption, head=head, body=body)


def _best(column: np.ndarray, hib: bool | None) -> float:
    """The column's best value, or NaN (marks nothing) when the direction is unknown or all are equal."""
    finite = column[np.isfinite(column)]
    if hib is None or len(np.unique(finite)) < 2:
        return math.nan
    return float(finite.max() if hib else finite.min())


def _spread(lo: float, hi: float, sd: float) -> tuple[str, str]:
    """(short spread text, tooltip): the confidence interval where present, else ±std."""
    if not math.isnan(lo) and not math.isnan(hi):
        return f"{fmt(lo)}–{fmt(hi)}", "95% confidence interval"
    if not math.isnan(sd):
        return f"± {fmt(sd)}", "standard deviation over subsets/splits"
    return "", ""


TIDY_COLUMNS = [
    "run_id",
    "model",
    "sampler",
    "steps",
    "guidance",
    "metric",
    "value",
    "std",
    "ci_low",
    "ci_high",
    "n",
    "seed",
    "extractor",
    "weights_id",
    "mode",
    "nfe",
    "s_per_image",
]


def tidy_table(df: pd.DataFrame) -> HtmlTable:
    """Every result row (the tidy table itself), sortable by any column."""
    cols = [c for c in TIDY_COLUMNS if c in df.columns]
    head = [[Th(c, col=i) for i, c in enumerate(cols)]]
    body = []
    for row in df[cols].itertuples(index=False):
        cells = []
        for c, v in zip(cols, row):
            text = fmt(v) if not isinstance(v, str) else v
            if c == "weights_id" and len(text) > 19:
                cells.append(Td(text[:19] + "…", sort=text, title=text))
            else:
                cells.append(Td(text, sort=_sort_key(v)))
        body.append(cells)
    return HtmlTable(
        id="table-tidy",
        title="All results (tidy)",
        caption=f"{len(df)} rows, one per cell × metric · {provenance_text(df)}",
        head=head,
        body=body,
    )


def deltas_table(
    d: pd.DataFrame,
    baseline_name: str,
    df: pd.DataFrame,
    table_id: str = "table-deltas",
    title: str = "Deltas vs baseline",
) -> HtmlTable:
    """Matched cells × metrics: baseline, now, delta (absolute, relative, in noise units), verdict."""
    names = [
        "model",
        "sampler",
        "steps",
        "guidance",
        "metric",
        "baseline",
        "now",
        "Δ",
        "Δ %",
        "noise σ",
        "Δ/σ",
        "verdict",
    ]
    head = [[Th(n, col=i) for i, n in enumerate(names)]]
    body = []
    for _, r in d.iterrows():
        vals = [
            r["model"],
            r["sampler"],
            r["steps"],
            r["guidance"],
            r["metric"],
            r["baseline"],
            r["now"],
            r["delta"],
            100 * r["rel"] if pd.notna(r["rel"]) else math.nan,
            r["noise"],
            r["z"],
        ]
        cells = [Td(fmt(v) if not isinstance(v, str) else v, sort=_sort_key(v)) for v in vals]
        cells.append(Td(r["verdict"], sort=r["verdict"], cls=f"verdict-{r['verdict'].replace(' ', '-')}"))
        body.append(cells)
    caption = (
        f"Against {baseline_name}: {len(d)} matching (model, sampler, steps, guidance, metric) entries; "
        f"verdicts are evalkit check's: worse/better beyond the gate's tolerance (and, on common seeds, a paired "
        f"CI clear of 0), else within noise · now: {provenance_text(df)}"
    )
    return HtmlTable(id=table_id, title=title, caption=caption, head=head, body=body)
