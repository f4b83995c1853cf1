"""The tidy results row: one row per cell × metric, the standard columns first."""

from __future__ import annotations

from typing import Any

import pandas as pd

# The tidy results row. Throughput is reported as rows too (metric "images_per_s", ...);
# every row also carries its cell's cost columns so quality can be joined with speed directly.
RESULT_COLUMNS = [
    "run_id",
    "cell_id",
    "suite",
    "model",
    "sampler",
    "steps",
    "guidance",
    "n",
    "seed",
    "metric",
    "value",
    "std",
    "ci_low",
    "ci_high",
    "extractor",
    "weights_id",
    "mode",
    "model_calls",
    "nfe",
    "s_per_image",
    "device",
    "config_hash",
    "error",  # "" or why the row's metric failed (its value is then NaN): one line
]


def tidy_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows → DataFrame with the standard columns first (missing ones as NaN)."""
    df = pd.DataFrame(rows)
    for col in RESULT_COLUMNS:
        if col not in df.columns:
            df[col] = pd.Series(dtype="float64")
    # rows written before rows carried an error, and cost rows, have none: "" (a text column, never NaN)
    df["error"] = df["error"].astype(object).where(df["error"].notna(), "").astype(str)
    return df[RESULT_COLUMNS + [c for c in df.columns if c not in RESULT_COLUMNS]]
