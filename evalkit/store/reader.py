"""The one reader of run folders: :func:`read_run` → :class:`RunData`, used by the report, the gate and
the Python API alike.

Results are derived from the cells, not trusted from ``results.parquet`` (an export for users): the rows
of every finished cell that run.json lists are read from its ``rows.json``, whose sha256 the sealed
``cell.json`` holds. A folder without cells (results exported alone) is read from its parquet.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evalkit.errors import StoreError
from evalkit.store.folder import RunStore
from evalkit.store.rows import RESULT_COLUMNS, tidy_frame

CELL_COLUMNS = ["model", "sampler", "steps", "guidance"]


def split_features(flat: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """``{"extractor/output": array}`` (as stored in ``features.npz``) → ``{extractor: {output: array}}``."""
    nested: dict[str, dict[str, np.ndarray]] = {}
    for key, arr in flat.items():
        extractor, _, output = key.rpartition("/")
        nested.setdefault(extractor, {})[output] = arr
    return nested


def join_features(nested: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The inverse of :func:`split_features`."""
    return {f"{ex}/{out}": arr for ex, outputs in nested.items() for out, arr in outputs.items()}


@dataclass
class RunData:
    """A run folder as every reader sees it: manifest, tidy results (with ``cell_id``), cell records."""

    root: Path
    manifest: dict[str, Any]
    results: pd.DataFrame
    cells: dict[str, dict[str, Any]] = field(default_factory=dict)  # cell_id → record (done or failed)

    @property
    def path(self) -> Path:
        return self.root

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.root.name)

    @property
    def config(self) -> dict[str, Any]:
        if "config" not in self.manifest:
            raise StoreError(f"{self.root}: run.json has no suite config (not written by `evalkit run`)")
        return self.manifest["config"]

    @property
    def seed(self) -> int:
        return int(self.config["seed"])

    @property
    def n(self) -> int:
        return int(self.config["samples"])

    @property
    def store(self) -> RunStore:
        return RunStore(self.root)

    def status(self, cell_id: str) -> str:
        """done, failed or missing."""
        return str(self.cells.get(cell_id, {}).get("status", "missing"))

    def error(self, cell_id: str) -> str:
        """The last line of a failed cell's traceback."""
        lines = str(self.cells.get(cell_id, {}).get("error") or "").strip().splitlines()
        return lines[-1] if lines else "unknown error"

    def failed_cells(self) -> list[dict[str, Any]]:
        return [c for c in self.cells.values() if c.get("status") == "failed"]

    def features(self, cell_id: str) -> dict[str, dict[str, np.ndarray]]:
        """Per-sample extractor outputs of a finished cell, ``{extractor: {output: (n, ...) array}}``."""
        return split_features(self.store.load_features(cell_id))

    def samples(self, cell_id: str) -> dict[str, np.ndarray] | None:
        return self.store.load_samples(cell_id)

    def conditions(self) -> tuple[np.ndarray | None, list[str] | None]:
        """Per-sample class labels and prompts of the run (as its cells were generated), or (None, None)."""
        return self.store.load_conditions()


def read_run(path: str | os.PathLike) -> RunData:
    """Read a run folder; a :class:`StoreError` (exit 2) says what is missing."""
    root = Path(path)
    if not root.exists():
        raise StoreError(f"run folder {root} does not exist")
    if not root.is_dir():
        raise StoreError(f"{root} is not a run folder (expected a directory with run.json)")
    store = RunStore(root)
    manifest = store.read_manifest()
    if manifest is None:  # a run killed before its first manifest, or results exported alone
        manifest = {"run_id": root.name}
        if not (root / "cells").is_dir():
            if not (root / "results.parquet").is_file():
                raise StoreError(f"{root} is not an evalkit run folder: no run.json, results.parquet or cells/")
            return RunData(root, manifest, normalise(store.results(), manifest, root))
        cells = {
            rec["cell_id"]: {k: v for k, v in rec.items() if k != "_dir"}
            for rec in store.iter_cells()
            if "cell_id" in rec
        }
    else:
        listed = [c["cell_id"] for c in manifest.get("cells", [])]
        cells = {cid: rec for cid in listed if (rec := store.read_cell(cid))}
    rows = [r for cid, rec in cells.items() if rec.get("status") == "done" for r in store.cell_rows(cid)]
    ids = {
        (c["model"], c["sampler"], int(c["steps"]), float(c["guidance"])): c["cell_id"]
        for c in manifest.get("cells", [])
    }
    for r in rows:  # rows written before rows carried their cell id
        r.setdefault("cell_id", ids.get((r["model"], r["sampler"], int(r["steps"]), float(r["guidance"]))))
    return RunData(root, manifest, normalise(tidy_frame(rows), manifest, root), cells)


def read_runs(paths: Iterable[str | os.PathLike | RunData]) -> list[RunData]:
    return [p if isinstance(p, RunData) else read_run(p) for p in paths]


def normalise(df: pd.DataFrame, manifest: dict[str, Any], path: Path) -> pd.DataFrame:
    """Standard columns and dtypes, run_id/suite filled in from the manifest where a row lacks them."""
    df = tidy_frame(df.to_dict("records")) if not set(RESULT_COLUMNS) <= set(df.columns) else df.copy()
    run_id = manifest.get("run_id") or path.name
    df["run_id"] = df["run_id"].where(df["run_id"].notna() & (df["run_id"].astype(str) != ""), run_id).astype(str)
    df["suite"] = df["suite"].fillna(manifest.get("suite", "")).astype(str)
    for col in ("cell_id", "model", "sampler", "metric", "extractor", "weights_id", "mode", "device", "config_hash"):
        df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    df["steps"] = pd.to_numeric(df["steps"], errors="coerce").astype("Int64")
    for col in ("guidance", "value", "std", "ci_low", "ci_high", "model_calls", "nfe", "s_per_image", "n", "seed"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df.reset_index(drop=True)
