"""The one reader of run folders: :func:`read_run` → :class:`RunData`, used by the report, the gate and
the Python API alike.

Results are derived from the cells, not trusted from ``results.parquet`` (an export for users): the rows
of every finished cell that run.json lists are read from its ``rows.json``, whose sha256 the sealed
``cell.json`` holds. A folder without cells (results exported alone) is read from its parquet.

A listed cell whose record another config made (its samples, seed, grid point or — where run.json names
it — cell hash differ from run.json's: an interrupted run of another suite into the same folder) is
*stale*: its rows are left out and :attr:`RunData.stale` says why. The export is verified against run.json
and the cells on demand (:attr:`RunData.export_problems`, :meth:`RunData.export`; :mod:`evalkit.store.export`).
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
from evalkit.store import export as _export
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
    cells: dict[str, dict[str, Any]] = field(default_factory=dict)  # cell_id → record (done, failed or stale)
    stale: dict[str, str] = field(default_factory=dict)  # cell_id → why its record is not run.json's config's
    derived: bool = True  # results come from the cells (False: a folder holding only an export)
    _export_problems: list[str] | None = field(default=None, repr=False)

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
        """done, failed, stale (finished under another config than run.json's: left out) or missing."""
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

    @property
    def export_problems(self) -> list[str]:
        """Every way results.parquet / results.csv disagree with run.json and the cells ([] when they agree
        or there is no export); computed on first use."""
        if self._export_problems is None:
            self._export_problems = self._verify_export()
        return self._export_problems

    @property
    def warnings(self) -> list[str]:
        """What a reader should be told: stale cells left out, an export that disagrees with the cells."""
        stale = [
            f"{self.root}: cell {c} was made by another config and is left out ({why})" for c, why in self.stale.items()
        ]
        return stale + self.export_problems

    def export(self) -> pd.DataFrame:
        """results.parquet as written by the run, once verified; :class:`StoreError` when it disagrees."""
        if not (self.root / _export.PARQUET).is_file():
            raise StoreError(f"{self.root} has no {_export.PARQUET}")
        if self.export_problems:
            raise StoreError("; ".join(self.export_problems))
        return _export.read_export(self.root, _export.PARQUET)

    def _verify_export(self) -> list[str]:
        if not self.derived:  # the export is all there is: only its own checksums can be verified
            return _export.export_problems(self.root, config_hash=None, rows_sha256=None, derived=None)
        exported: dict[str, pd.DataFrame | Exception] = {}
        for name in _export.export_files(self.root):
            try:
                exported[name] = _fill_cell_ids(
                    normalise(_export.read_export(self.root, name), self.manifest, self.root), self.manifest
                )
            except Exception as e:  # an export that pandas cannot read is a problem to report, not a crash
                exported[name] = e
        done = [c for c, rec in self.cells.items() if rec.get("status") == "done"]
        return _export.export_problems(
            self.root,
            config_hash=self.manifest.get("config_hash"),
            rows_sha256={c: str((self.cells[c].get("files") or {}).get("rows.json", "")) for c in done},
            derived=self.results,
            exported=exported,
        )


def read_run(path: str | os.PathLike) -> RunData:
    """Read a run folder; a :class:`StoreError` (exit 2) says what is missing."""
    root = Path(path)
    if not root.exists():
        raise StoreError(f"run folder {root} does not exist")
    if not root.is_dir():
        raise StoreError(f"{root} is not a run folder (expected a directory with run.json)")
    store = RunStore(root)
    manifest = store.read_manifest()
    stale: dict[str, str] = {}
    if manifest is None:  # a run killed before its first manifest, or results exported alone
        manifest = {"run_id": root.name}
        if not (root / "cells").is_dir():
            if not (root / "results.parquet").is_file():
                raise StoreError(f"{root} is not an evalkit run folder: no run.json, results.parquet or cells/")
            return RunData(root, manifest, normalise(store.results(), manifest, root), derived=False)
        cells = {
            rec["cell_id"]: {k: v for k, v in rec.items() if k != "_dir"}
            for rec in store.iter_cells()
            if "cell_id" in rec
        }
    else:
        cells, stale = _listed_cells(store, manifest)
    rows = [r for cid, rec in cells.items() if rec.get("status") == "done" for r in store.cell_rows(cid)]
    results = _fill_cell_ids(normalise(tidy_frame(rows), manifest, root), manifest)
    return RunData(root, manifest, results, cells, stale)


def _listed_cells(store: RunStore, manifest: dict[str, Any]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """The records of the cells run.json lists, those another config made marked stale (with the reason)."""
    cells, stale = {}, {}
    config = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    for entry in manifest.get("cells", []):
        cid = entry["cell_id"]
        rec = store.read_cell(cid)
        if not rec:
            continue
        why = _other_config(entry, rec, config)
        if why:
            stale[cid] = why
            rec = {**rec, "status": "stale", "stale_reason": why, "status_on_disk": rec.get("status")}
        cells[cid] = rec
    return cells, stale


def _other_config(entry: dict[str, Any], rec: dict[str, Any], config: dict[str, Any]) -> str | None:
    """Why a cell's record was not made by run.json's config (None: nothing says so); the plainest reason first."""
    for key, want in (("n", config.get("samples")), ("seed", config.get("seed"))):
        if want is not None and rec.get(key) is not None and not _equal(rec[key], want):
            return f"made with {'samples' if key == 'n' else key} {rec[key]}, run.json says {want}"
    for key in ("model", "sampler", "steps", "guidance"):
        if key in entry and rec.get(key) is not None and not _equal(rec[key], entry[key]):
            return f"made for {key} {rec[key]}, run.json says {entry[key]}"
    if entry.get("cell_hash") and rec.get("cell_hash") != entry["cell_hash"]:
        return f"cell hash {rec.get('cell_hash')} != {entry['cell_hash']} in run.json"
    return None


def _equal(a: Any, b: Any) -> bool:
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _fill_cell_ids(df: pd.DataFrame, manifest: dict[str, Any]) -> pd.DataFrame:
    """Rows written before rows carried their cell id get it from run.json's cells (by grid point)."""
    missing = df["cell_id"] == ""
    if not missing.any():
        return df
    ids = {
        (c["model"], c["sampler"], int(c["steps"]), float(c["guidance"])): c["cell_id"]
        for c in manifest.get("cells", [])
    }
    df = df.copy()
    df.loc[missing, "cell_id"] = [
        ids.get((r.model, r.sampler, int(r.steps), float(r.guidance)), "") if pd.notna(r.steps) else ""
        for r in df[missing].itertuples()
    ]
    return df


def read_runs(paths: Iterable[str | os.PathLike | RunData]) -> list[RunData]:
    return [p if isinstance(p, RunData) else read_run(p) for p in paths]


def normalise(df: pd.DataFrame, manifest: dict[str, Any], path: Path) -> pd.DataFrame:
    """Standard columns and dtypes, run_id/suite filled in from the manifest where a row lacks them."""
    df = tidy_frame(df.to_dict("records")) if not set(RESULT_COLUMNS) <= set(df.columns) else df.copy()
    run_id = manifest.get("run_id") or path.name
    df["run_id"] = df["run_id"].where(df["run_id"].notna() & (df["run_id"].astype(str) != ""), run_id).astype(str)
    df["suite"] = df["suite"].astype(object).where(df["suite"].notna(), manifest.get("suite", "")).astype(str)
    for col in ("cell_id", "model", "sampler", "metric", "extractor", "weights_id", "mode", "device", "config_hash"):
        df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    df["steps"] = pd.to_numeric(df["steps"], errors="coerce").astype("Int64")
    for col in ("guidance", "value", "std", "ci_low", "ci_high", "model_calls", "nfe", "s_per_image", "n", "seed"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    return df.reset_index(drop=True)
