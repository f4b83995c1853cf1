"""Read run folders for the report: manifest, tidy results, cell records. Never runs anything."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evalkit.store import RESULT_COLUMNS, RunStore, tidy_frame

# A cell is identified across runs by these columns.
CELL_KEYS = ["run_id", "model", "sampler", "steps", "guidance"]


@dataclass
class Run:
    """One run folder as the report sees it."""

    path: Path
    manifest: dict[str, Any]
    results: pd.DataFrame
    cells: list[dict[str, Any]] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.path.name)

    @property
    def store(self) -> RunStore:
        return RunStore(self.path)

    def failed_cells(self) -> list[dict[str, Any]]:
        return [c for c in self.cells if c.get("status") == "failed"]

    def samples(self, cell_id: str) -> dict[str, np.ndarray] | None:
        return self.store.load_samples(cell_id)


def open_run(path: str | os.PathLike) -> Run:
    """A run folder, or FileNotFoundError saying what is missing (the CLI turns it into exit 2)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"run folder {p} does not exist")
    if not p.is_dir():
        raise FileNotFoundError(f"{p} is not a run folder (expected a directory with run.json)")
    store = RunStore(p)
    manifest = store.read_manifest()
    has_results = (p / "results.parquet").is_file() or (p / "cells").is_dir()
    if manifest is None and not has_results:
        raise FileNotFoundError(f"{p} is not an evalkit run folder: no run.json, results.parquet or cells/")
    manifest = manifest or {"run_id": p.name}
    cells = [{k: v for k, v in c.items() if k != "_dir"} for c in store.iter_cells()]
    return Run(path=p, manifest=manifest, results=_normalise(store.results(), manifest, p), cells=cells)


def open_runs(paths: Iterable[str | os.PathLike | Run]) -> list[Run]:
    return [p if isinstance(p, Run) else open_run(p) for p in paths]


def _normalise(df: pd.DataFrame, manifest: dict[str, Any], path: Path) -> pd.DataFrame:
    """Standard columns and dtypes, run_id/suite filled in from the manifest where a row lacks them."""
    df = tidy_frame(df.to_dict("records")) if not set(RESULT_COLUMNS) <= set(df.columns) else df.copy()
    run_id = manifest.get("run_id") or path.name
    df["run_id"] = df["run_id"].where(df["run_id"].notna() & (df["run_id"].astype(str) != ""), run_id).astype(str)
    df["suite"] = df["suite"].fillna(manifest.get("suite", "")).astype(str)
    for col in ("model", "sampler", "metric", "extractor", "weights_id", "mode", "device", "config_hash"):
        df[col] = df[col].fillna("").astype(str)
    df["steps"] = pd.to_numeric(df["steps"], errors="coerce").astype("Int64")
    for col in ("guidance", "value", "std", "ci_low", "ci_high", "model_calls", "nfe", "s_per_image", "n", "seed"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df.reset_index(drop=True)


def load_results(runs: Sequence[str | os.PathLike | Run] | str | os.PathLike | Run) -> pd.DataFrame:
    """All runs' tidy results, concatenated (``run_id`` tells them apart)."""
    if isinstance(runs, (str, os.PathLike, Run)):
        runs = [runs]
    frames = [r.results for r in open_runs(runs)]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return _normalise(tidy_frame([]), {"run_id": ""}, Path("."))
    return pd.concat(frames, ignore_index=True)
