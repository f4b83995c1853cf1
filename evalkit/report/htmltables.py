"""DataFrames → table models the template renders (header cells with sort columns, body cells with
display text, a numeric sort key and the best value per column marked). Text only: the template
escapes everything."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from evalkit.report.tables import direction_word, fmt, label, pivot_values, provenance_text, shown_task_columns
from evalkit.study.cells import TASK_KEYS
from evalkit.study.floors import floor_for
from evalkit.study.rank import PairTable, rank, separate_ci_pairs
from evalkit.study.words import is_at_floor

TASK_LEVELS = tuple(TASK_KEYS)  # a task suite's pivot rows and tidy columns: task, strength, controlnet_scale
TASK_AXES = TASK_LEVELS[1:]  # numeric: sorted as numbers
TASK_GROUP = tuple(f"_{k}" for k in TASK_LEVELS)


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


def pivot_table(
    df: pd.DataFrame, metric: str, pairs: PairTable | None = None, floors: pd.DataFrame | None = None
) -> HtmlTable:
    """Sampler (and N; a task suite's task and strength first) rows × (guidance, steps) columns for one metric.
    Bold: the best of a column among cells of equal N (and task point), only where the CI of its difference to
    every other excludes 0; "≈": cells tied with that column's best; "at floor": not confidently worse than real
    samples (then a floor column per row)."""
    frames = pivot_values(df, metric, ("value", "std", "ci_low", "ci_high", "run_id", "cell_id"))
    p = frames["value"]
    names, cols = list(p.index.names), list(p.columns)
    guidances = list(dict.fromkeys(g for g, _ in cols))
    marks = _marks(frames, metric, pairs, floors)
    floor_col = _floor_column(p, metric, floors)
    head = [
        [Th(str(n), col=i, rowspan=2) for i, n in enumerate(names)]
        + [Th(f"guidance {g:g}", colspan=sum(1 for c in cols if c[0] == g)) for g in guidances]
        + ([Th("real-vs-real floor", col=len(names) + len(cols), rowspan=2)] if floor_col else []),
        [Th(f"{s} steps", col=len(names) + j) for j, (_, s) in enumerate(cols)],
    ]
    body = []
    for i, key in enumerate(p.index):
        keys = key if isinstance(key, tuple) else (key,)
        cells = [Td(fmt(k), sort=_sort_key(k) if names[c] in TASK_AXES else str(k)) for c, k in enumerate(keys)]
        for j in range(len(cols)):
            v = p.iat[i, j]
            sub, tip = _spread(*(float(frames[k].iat[i, j]) for k in ("ci_low", "ci_high", "std")))
            cls, tag = marks.get((i, j), ("", ""))
            cells.append(Td(fmt(v), sort=_sort_key(v), sub=" ".join(t for t in (sub, tag) if t), title=tip, cls=cls))
        if floor_col:
            median, key_, spread, tip = floor_col[i]
            cells.append(Td(median, sort=_sort_key(key_), sub=spread, title=tip))
        body.append(cells)
    caption = (
        f"{label(metric)} ({direction_word(metric)}; bold: best of its column among cells of equal N, where the "
        "CI of the difference to every other excludes 0; ≈: tied with the column's best; at floor: not "
        f"confidently worse than real samples) · {provenance_text(df, metric)}"
    )
    table_id = "table-" + metric.replace("@", "-")  # fd@clip: fd on the clip extractor
    return HtmlTable(id=table_id, title=label(metric), caption=caption, head=head, body=body)


def _long_cells(frames: dict[str, pd.DataFrame], metric: str) -> pd.DataFrame:
    """The pivot's filled positions as a cell frame (``i``, ``j``: row and column) that :mod:`evalkit.study` ranks."""
    p = frames["value"]
    levels = list(p.index.names)
    long = []
    for i, key in enumerate(p.index):
        keys = dict(zip(levels, key if isinstance(key, tuple) else (key,)))
        for j in range(p.shape[1]):
            if pd.isna(p.iat[i, j]):
                continue
            row = {"i": i, "j": j, "n": keys.get("n"), metric: float(p.iat[i, j])}
            row |= {f"_{k}": keys[k] for k in levels if k in TASK_LEVELS}  # the task point: ranked within it
            row |= {"run_id": frames["run_id"].iat[i, j], "cell_id": frames["cell_id"].iat[i, j]}
            row |= {f"{metric}_lo": frames["ci_low"].iat[i, j], f"{metric}_hi": frames["ci_high"].iat[i, j]}
            long.append(row)
    return pd.DataFrame(long)


def _marks(
    frames: dict[str, pd.DataFrame], metric: str, pairs: PairTable | None, floors: pd.DataFrame | None
) -> dict[tuple[int, int], tuple[str, str]]:
    """(row, column) → (css class, short tag): 'best' (confidently), 'tie' (≈ the best), and 'at floor'."""
    cells = _long_cells(frames, metric)
    out: dict[tuple[int, int], tuple[str, str]] = {}
    if cells.empty:
        return out
    table = pairs if pairs is not None else PairTable(separate_ci_pairs(cells, metric))
    for _, col in cells.groupby(["j", "n", *[c for c in cells.columns if c in TASK_GROUP]], sort=False, dropna=False):
        r = rank(col, metric, table)
        if r is None or r.runner_up is None:
            continue
        if r.confident:
            out[(int(r.best["i"]), int(r.best["j"]))] = ("best", "")
        else:
            for c in [r.best, *r.measured_ties] if r.measured_ties else []:
                out[(int(c["i"]), int(c["j"]))] = ("tie", "≈ tie")
    for _, c in cells.iterrows():
        if is_at_floor(c, metric, floors):
            cls, tag = out.get((int(c["i"]), int(c["j"])), ("", ""))
            out[(int(c["i"]), int(c["j"]))] = ((cls + " floor").strip(), " · ".join(t for t in (tag, "at floor") if t))
    return out


def _floor_column(p: pd.DataFrame, metric: str, floors: pd.DataFrame | None) -> list[tuple[str, float, str, str]]:
    """Per row: (median, sort value, range, tooltip) of the floor at the row's N; [] when no row has one."""
    if floors is None or floors.empty or "n" not in p.index.names:
        return []
    levels = list(p.index.names)
    out, any_floor = [], False
    for key in p.index:
        keys = dict(zip(levels, key if isinstance(key, tuple) else (key,)))
        f = floor_for(floors, metric, keys.get("n"), keys.get("run_id"))
        any_floor |= f is not None
        if f is None:
            out.append(("—", math.nan, "", ""))
        else:
            tip = f"real vs real at N={int(f['n'])}: median and range over {int(f['draws'])} draws"
            out.append((fmt(f["median"]), float(f["median"]), f"{fmt(f['low'])}–{fmt(f['high'])}", tip))
    return out if any_floor else []


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
    "task",  # task suites: the task and its axes (only those the data has)
    "strength",
    "controlnet_scale",
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
    "cost_source",  # cost rows: measured, counted, reported (by the adapter) or unknown
]


def tidy_table(df: pd.DataFrame) -> HtmlTable:
    """Every result row (the tidy table itself), sortable by any column."""
    tasks = shown_task_columns(df)
    cols = [c for c in TIDY_COLUMNS if c in df.columns and (c not in TASK_LEVELS or c in tasks)]
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
    """Matched cells × metrics: baseline, now, delta (absolute, relative, in noise units), verdict; a task suite's
    cells also by their task point (task and strength)."""
    tasks = "task_point" in d and bool((d["task_point"].astype(str) != "").any())
    names = [
        "model",
        "sampler",
        "steps",
        "guidance",
        *(["task"] if tasks else []),
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
            *([r["task_point"]] if tasks else []),
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
