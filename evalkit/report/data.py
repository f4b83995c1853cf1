"""What the report reads: run folders through the store's one reader, their results concatenated, and what
:mod:`evalkit.study` says about them (pair comparisons with CIs, noise floors, notes)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from evalkit.store import RunData, read_runs, tidy_frame
from evalkit.store.reader import normalise
from evalkit.study.cells import CELL_KEYS, cell_frame  # a cell is identified across runs by CELL_KEYS (N included)
from evalkit.study.compare import DEFAULT_RESAMPLES, compare_with_intervals, fill_intervals
from evalkit.study.floors import FLOOR_COLUMNS, floors_frame
from evalkit.study.rank import PairTable, mixed_n_note

__all__ = ["CELL_KEYS", "StudyData", "load_results", "load_study"]


def load_results(runs: Sequence[str | os.PathLike | RunData] | str | os.PathLike | RunData) -> pd.DataFrame:
    """All runs' tidy results, concatenated (``run_id`` tells them apart)."""
    if isinstance(runs, (str, os.PathLike, RunData)):
        runs = [runs]
    frames = [r.results for r in read_runs(runs)]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return normalise(tidy_frame([]), {"run_id": ""}, Path("."))
    return pd.concat(frames, ignore_index=True)


@dataclass
class StudyData:
    """The runs as the report shows them: results (bootstrap CIs filled in where a metric stores none), one row
    per cell, the pair comparisons, the noise floors, and the notes a reader must see."""

    results: pd.DataFrame
    cells: pd.DataFrame
    pairs: PairTable
    floors: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FLOOR_COLUMNS))
    notes: list[str] = field(default_factory=list)
    n_resamples: int = DEFAULT_RESAMPLES


def load_study(
    runs: Sequence[str | os.PathLike | RunData],
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    cache_dir: str | os.PathLike | None = None,
) -> StudyData:
    """Read the runs once and compare their cells (:func:`evalkit.study.compare_with_intervals`, all runs
    together: cells of equal N are compared across runs too)."""
    runs = read_runs(runs)
    df = load_results(runs)
    pairs, intervals = (
        compare_with_intervals(runs, confidence=confidence, n_resamples=n_resamples, cache_dir=cache_dir)
        if not df.empty
        else (None, pd.DataFrame())
    )
    df = fill_intervals(df, intervals)
    cells = cell_frame(df)
    notes = [mixed_n_note(cells)] if not cells.empty else []
    for r in runs:
        w = r.warnings
        notes += list(w() if callable(w) else w)
    return StudyData(df, cells, PairTable(pairs), floors_frame(runs), [n for n in notes if n], n_resamples)
