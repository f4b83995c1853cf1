"""The one reader of run folders: :func:`read_run` → :class:`RunData`, used by the report, the gate and
the Python API alike.

Results are derived from the cells, not trusted from ``results.parquet`` (an export for users): the rows
of every finished cell that run.json lists are read from its ``rows.json``, whose sha256 the sealed
``cell.json`` holds. A folder without cells (results exported alone) is read from its parquet.

A listed cell whose record another config made (its samples, seed, grid point or — where run.json names
it — cell hash differ from run.json's: an interrupted run of another suite into the same folder) is
*stale*: its rows are left out and :attr:`RunData.stale` says why. The export is verified against run.json
and the cells on demand (:attr:`RunData.export_problems`, :meth:`RunData.export`; :mod:`evalkit.store.export`).

:attr:`RunData.results` holds the cells of run.json's config (the last suite run into the folder): what the
gate judges and the report shows. A folder keeps every suite run into it: run.json's ``configs`` lists each
config seen (keyed by config hash) with its cells, and :attr:`RunData.all_results` — what ``results.parquet``
holds — has the rows of every finished cell of any of them (:func:`finished_cells`), each cell once.
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
from evalkit.store.folder import RunStore, configs_seen, finished_cells, record_config  # noqa: F401 (re-exported)
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
    # every finished cell of every config run into the folder (cell_id → record) and their rows: the export
    seen: dict[str, dict[str, Any]] | None = field(default=None, repr=False)
    all_results: pd.DataFrame | None = field(default=None, repr=False)
    _export_problems: list[str] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.seen is None:
            self.seen = {c: rec for c, rec in self.cells.items() if rec.get("status") == "done"}
        if self.all_results is None:
            self.all_results = self.results

    @property
    def configs(self) -> dict[str, dict[str, Any]]:
        """Every config run into this folder, by config hash: ``{suite, config, cells, first_run, last_run}``."""
        return configs_seen(self.manifest)

    def failed_metrics(self) -> pd.DataFrame:
        """The rows of run.json's config whose metric failed (value NaN, ``error`` saying why)."""
        return self.results[self.results["error"] != ""]

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

    def task_inputs(self) -> dict[str, np.ndarray] | None:
        """A task run's sources (``images``), ``masks``, ``control`` and source ``labels``; sample i used source
        i mod n. None for a run without a task."""
        return self.store.load_task_inputs()

    @property
    def export_problems(self) -> list[str]:
        """Every way results.parquet / results.csv disagree with run.json and the cells ([] when they agree
        or there is no export); computed on first use."""
        if self._export_problems is None:
            self._export_problems = self._verify_export()
        return self._export_problems

    @property
    def warnings(self) -> list[str]:
        """What a reader should be told: stale cells left out, an export that disagrees with the cells, cells
        timed on an overloaded machine (their ``timing.warnings``), samplers that space their timesteps
        differently (leading vs linspace/trailing: at few steps not the same start, so not a like-for-like
        comparison)."""
        stale = [
            f"{self.root}: cell {c} was made by another config and is left out ({why})" for c, why in self.stale.items()
        ]
        done = [rec for rec in self.cells.values() if rec.get("status") == "done"]
        return stale + self.export_problems + self._timing_warnings(done) + self._spacing_warnings(done)

    def _timing_warnings(self, done: list[dict[str, Any]]) -> list[str]:
        """Each warned cell's own line; past three cells, one line naming them all."""
        warned = [(rec.get("cell_id", "?"), w) for rec in done for w in (rec.get("timing") or {}).get("warnings", [])]
        if len(warned) <= 3:
            return [f"{self.root}: cell {cid}: {w}" for cid, w in warned]
        cells = list(dict.fromkeys(cid for cid, _ in warned))
        return [
            f"{self.root}: {len(cells)} of {len(done)} cells timed on an overloaded machine "
            f"({', '.join(cells[:8])}{', ...' if len(cells) > 8 else ''}); e.g. {warned[0][1]}"
        ]

    def _spacing_warnings(self, done: list[dict[str, Any]]) -> list[str]:
        """One line when the cells' schedules (cell.json ``schedule``) use more than one timestep spacing; each
        sampler's first timestep shown at its fewest steps, where the difference matters most."""
        first: dict[tuple[str, str], tuple[int, Any]] = {}  # (sampler, spacing) → (steps, first timestep)
        for rec in done:
            sch = rec.get("schedule") or {}
            spacing, timesteps = sch.get("timestep_spacing"), sch.get("timesteps")
            if spacing and timesteps:
                key, steps = (str(rec.get("sampler")), str(spacing)), int(rec.get("steps") or len(timesteps))
                if key not in first or steps < first[key][0]:
                    first[key] = (steps, timesteps[0])
        spacings = {spacing for _, spacing in first}
        if len(spacings) < 2:
            return []
        said = ", ".join(f"{s} uses {sp} spacing (first t = {t:g} at {n} steps)" for (s, sp), (n, t) in first.items())
        why = (
            "Leading spacing skips the high-noise end at few steps (Lin et al. 2024)"
            if "leading" in spacings
            else "Their timesteps differ at few steps"
        )
        return [
            f"{self.root}: samplers space their timesteps differently: {said}. {why}, so these samplers are not "
            "compared like for like; set samplers[].options.timestep_spacing (e.g. trailing) to make them agree"
        ]

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
        seen = self.seen or {}
        return _export.export_problems(
            self.root,
            config_hash=self.manifest.get("config_hash"),
            rows_sha256={c: str((rec.get("files") or {}).get("rows.json", "")) for c, rec in seen.items()},
            derived=self.all_results,
            exported=exported,
        )

    def floors(self) -> pd.DataFrame | None:
        """The real-vs-real noise floors the run stored (``floors.json``), one row per metric row, with the
        method in ``attrs["method"]``; None when there are none or they were made for another N, seed or
        reference (the fingerprint in floors.json differs from run.json's, or is missing where run.json has one)."""
        doc = self.store.read_floors()
        config = self.manifest.get("config") if isinstance(self.manifest.get("config"), dict) else {}
        if not doc or not isinstance(doc.get("rows"), list):
            return None
        for key, want in (("n", config.get("samples")), ("seed", config.get("seed"))):
            if want is not None and not _equal(doc.get(key), want):
                return None  # written by another config into this folder: not this run's floors
        if _fingerprint(self.manifest) and _fingerprint(doc) != _fingerprint(self.manifest):
            return None  # made against another reference (or cannot say which)
        frame = pd.DataFrame(doc["rows"])
        frame.attrs["method"] = str(doc.get("method", ""))
        return frame


def _fingerprint(doc: dict[str, Any]) -> str:
    """The reference fingerprint a run.json or floors.json records ("" where none)."""
    ref = doc.get("reference")
    return str(ref.get("fingerprint") or "") if isinstance(ref, dict) else ""


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
    seen = finished_cells(store, manifest, cells)
    all_results = results
    if any(cells.get(c, {}).get("status") != "done" for c in seen):  # cells of other configs run into the folder
        rows = [r for cid in seen for r in store.cell_rows(cid)]
        all_results = _fill_cell_ids(normalise(tidy_frame(rows), manifest, root), manifest)
    return RunData(root, manifest, results, cells, stale, seen=seen, all_results=all_results)


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
    text = (
        "cell_id",
        "model",
        "sampler",
        "metric",
        "extractor",
        "weights_id",
        "mode",
        "device",
        "config_hash",
        "error",
    )
    for col in text:
        df[col] = df[col].astype(object).where(df[col].notna(), "").astype(str)
    df["steps"] = pd.to_numeric(df["steps"], errors="coerce").astype("Int64")
    for col in ("guidance", "value", "std", "ci_low", "ci_high", "model_calls", "nfe", "s_per_image", "seed"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
    n = pd.to_numeric(df["n"], errors="coerce")
    df["n"] = n.astype("Int64") if (n.dropna() % 1 == 0).all() else n.astype("float64")  # samples: an integer
    return df.reset_index(drop=True)
