"""What the report reads: run folders through the store's one reader, their results concatenated."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from evalkit.store import RunData, read_runs, tidy_frame
from evalkit.store.reader import normalise

# A cell is identified across runs by these columns.
CELL_KEYS = ["run_id", "model", "sampler", "steps", "guidance"]


def load_results(runs: Sequence[str | os.PathLike | RunData] | str | os.PathLike | RunData) -> pd.DataFrame:
    """All runs' tidy results, concatenated (``run_id`` tells them apart)."""
    if isinstance(runs, (str, os.PathLike, RunData)):
        runs = [runs]
    frames = [r.results for r in read_runs(runs)]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return normalise(tidy_frame([]), {"run_id": ""}, Path("."))
    return pd.concat(frames, ignore_index=True)
