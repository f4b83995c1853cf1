"""Tidy results → one row per cell (the shape rankings, frontiers and plots read), N part of every key.

A metric column is keyed by its result row name (``fd``) where the results hold that row on one extractor
only, and by ``<row>@<extractor>`` (``fd@clip``) where they hold it on several: the same metric on two
feature spaces is two measurements, never collapsed into one column (:func:`column_keys`, :func:`split_key`).
"""

from __future__ import annotations

import pandas as pd

# A cell is identified across runs by these columns; N is part of it (cells of another N are other cells).
CELL_KEYS = ["run_id", "model", "sampler", "steps", "guidance", "n"]
# ... and, in a task suite's results, the task and its axes (:mod:`evalkit.suite.tasks`), as steps and guidance
TASK_KEYS = ["task", "strength", "controlnet_scale"]
COST_COLUMNS = ["s_per_image", "nfe", "model_calls"]
SEP = "@"  # metric column key: "<row>@<extractor>" where a row is measured on several extractors


def _extractors(df: pd.DataFrame) -> pd.Series:
    if "extractor" not in df:
        return pd.Series("", index=df.index, dtype=object)
    return df["extractor"].fillna("").astype(str)


def column_keys(df: pd.DataFrame) -> pd.Series:
    """Each result row's metric column key: the row name, suffixed ``@<extractor>`` where that row name
    appears on several extractors in ``df``."""
    if df.empty:
        return pd.Series(dtype=object, index=df.index)
    ex = _extractors(df)
    multi = ex.groupby(df["metric"]).nunique()
    multi = set(multi[multi > 1].index)
    return pd.Series(
        [f"{m}{SEP}{x}" if m in multi else str(m) for m, x in zip(df["metric"], ex)], index=df.index, dtype=object
    )


def split_key(key: str) -> tuple[str, str | None]:
    """(row name, extractor or None) of a metric column key."""
    metric, sep, extractor = str(key).partition(SEP)
    return metric, (extractor if sep else None)


def rows_of(df: pd.DataFrame, key: str) -> pd.DataFrame:
    """The result rows of one metric column key (a bare row name matches it on any extractor)."""
    metric, extractor = split_key(key)
    sub = df[df["metric"] == metric]
    return sub if extractor is None else sub[_extractors(sub) == extractor]


def cell_keys(df: pd.DataFrame) -> list[str]:
    """The columns that tell cells apart in ``df``: :data:`CELL_KEYS`, and the task columns where it has them."""
    return CELL_KEYS + [c for c in TASK_KEYS if c in df.columns]


def cell_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: ``cell_id``, a column per metric (keyed by :func:`column_keys`), ``<key>_std/_lo/_hi``
    for spreads, and the cell's cost (s_per_image, nfe, model_calls); ``steps`` and ``n`` as integers."""
    keys = cell_keys(df)
    if df.empty:
        return pd.DataFrame(columns=["cell_id", *keys, *COST_COLUMNS])
    g = df.assign(metric=column_keys(df)).groupby([*keys, "metric"], sort=False, dropna=False)
    parts = [g["value"].first().unstack("metric")]
    for col, suffix in (("std", "_std"), ("ci_low", "_lo"), ("ci_high", "_hi")):
        parts.append(g[col].first().unstack("metric").add_suffix(suffix))
    wide = pd.concat(parts, axis=1)
    per_cell = df.groupby(keys, sort=False, dropna=False)
    cost = per_cell[COST_COLUMNS].first()
    for col in COST_COLUMNS:  # the throughput row is authoritative; the per-row cost column fills gaps
        own = wide[col] if col in wide.columns else pd.Series(float("nan"), index=wide.index)
        wide[col] = own.fillna(cost[col])
    wide.insert(0, "cell_id", per_cell["cell_id"].first())
    wide = wide.reset_index()
    wide["steps"] = wide["steps"].astype("Int64")
    wide["n"] = pd.to_numeric(wide["n"], errors="coerce").round().astype("Int64")
    return wide
