"""Tidy results → one row per cell (the shape rankings, frontiers and plots read), N part of every key."""

from __future__ import annotations

import pandas as pd

# A cell is identified across runs by these columns; N is part of it (cells of another N are other cells).
CELL_KEYS = ["run_id", "model", "sampler", "steps", "guidance", "n"]
COST_COLUMNS = ["s_per_image", "nfe", "model_calls"]


def cell_frame(df: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: ``cell_id``, a column per metric value, ``<metric>_std/_lo/_hi`` for spreads, and the
    cell's cost (s_per_image, nfe, model_calls); ``steps`` and ``n`` as integers."""
    if df.empty:
        return pd.DataFrame(columns=["cell_id", *CELL_KEYS, *COST_COLUMNS])
    g = df.groupby([*CELL_KEYS, "metric"], sort=False, dropna=False)
    parts = [g["value"].first().unstack("metric")]
    for col, suffix in (("std", "_std"), ("ci_low", "_lo"), ("ci_high", "_hi")):
        parts.append(g[col].first().unstack("metric").add_suffix(suffix))
    wide = pd.concat(parts, axis=1)
    per_cell = df.groupby(CELL_KEYS, sort=False, dropna=False)
    cost = per_cell[COST_COLUMNS].first()
    for col in COST_COLUMNS:  # the throughput row is authoritative; the per-row cost column fills gaps
        own = wide[col] if col in wide.columns else pd.Series(float("nan"), index=wide.index)
        wide[col] = own.fillna(cost[col])
    wide.insert(0, "cell_id", per_cell["cell_id"].first())
    wide = wide.reset_index()
    wide["steps"] = wide["steps"].astype("Int64")
    wide["n"] = pd.to_numeric(wide["n"], errors="coerce").round().astype("Int64")
    return wide
