"""The run directory: manifest, atomic writes, per-cell artifacts, a lock. No orchestration here.

Layout::

    RUN/run.json                       config, config hash, environment, versions, git commit; ``configs``:
                                       every config run into the folder, by hash, with its cells
    RUN/.lock                          held (flock) while a process writes the run
    RUN/cells/<cell_id>/cell.json      the cell's spec, status, timings, the sha256 of every other file
                                       of the cell and of itself ("record_sha256"); written LAST, so its
                                       presence with status "done" marks a finished cell
    RUN/cells/<cell_id>/features.npz   per-sample extractor outputs, keys "<extractor>/<output>"
    RUN/cells/<cell_id>/grid.png       a sample grid
    RUN/cells/<cell_id>/samples.npz    the first K images (uint8) with their indices and labels/prompts,
                                       the same K across cells, so reports can line cells up
    RUN/cells/<cell_id>/rows.json      the cell's result rows
    RUN/conditions.npz                 the class label / prompt of every sample index (+ .sha256)
    RUN/task_inputs.npz                a task suite's source images, masks, controls (+ .sha256)
    RUN/results.stamp.json             the config hash and cell checksums the export was made from (last)
    RUN/results.parquet, results.csv   all rows of every config's finished cells, tidy (one row per cell ×
                                       metric), rewritten after each cell: an export; readers derive results
                                       from the cells (:mod:`evalkit.store.reader`)

Crash safety: every file is written to a temporary file in its folder, fsynced and renamed over the
target, so a reader sees the old file or the new one, never half of one. A cell counts as done only
when its cell.json matches its own checksum and every file it lists matches its sha256; anything
else (truncated, altered, missing) makes the runner recompute the cell. Temporary files left by a
killed writer are removed by the next process that takes the lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evalkit.errors import StoreError
from evalkit.store.export import write_export
from evalkit.store.files import (
    TMP_PREFIX,
    atomic_write_bytes,
    atomic_write_json,
    file_matches,
    json_bytes,
    load_npz_checked,
    npz_bytes,
    read_record,
    record_intact,
    safe_component,
    seal_record,
    sha256_bytes,
)
from evalkit.store.rows import tidy_frame


class RunStore:
    """One run folder. Open it with :meth:`open` (takes the lock) or read it with ``RunStore(path)``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._lock_fd: int | None = None

    # -- locking ---------------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:  # a file named like the folder, a path under a file, a read-only place
            raise StoreError(f"cannot use {self.root} as a run folder: {e.strerror or e}; choose another --out") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise StoreError(
                f"run folder {self.root} is in use by another evalkit process (pid {holder}); "
                "wait for it to finish or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._lock_fd = fd
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        """Temporary files of a killed evalkit writer (``.evalkit-<name>.<random>.tmp``) and nothing else;
        safe: we hold the lock."""
        pattern = f"{TMP_PREFIX}*.tmp"
        for tmp in [*self.root.glob(pattern), *self.root.glob(f"cells/*/{pattern}")]:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunStore:
        self.acquire_lock()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release_lock()

    # -- manifest --------------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.root / "run.json"

    def read_manifest(self) -> dict[str, Any] | None:
        """run.json, or None when there is none or it is unreadable (the runner then writes a new one)."""
        if not self.manifest_path.is_file():
            return None
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            manifest = None
        if not isinstance(manifest, dict):
            warnings.warn(f"{self.manifest_path} is corrupt; ignoring it", stacklevel=2)
            return None
        return manifest

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path, manifest)

    # -- per-sample conditions -------------------------------------------------------------------------
    @property
    def conditions_path(self) -> Path:
        return self.root / "conditions.npz"

    def write_conditions(self, labels: np.ndarray | None, prompts: list[str] | None) -> None:
        """The class label / prompt of every sample index, as the cells were generated with them."""
        arrays: dict[str, np.ndarray] = {}
        if labels is not None:
            arrays["labels"] = np.asarray(labels, dtype=np.int64)
        if prompts is not None:
            arrays["prompts"] = np.asarray(prompts, dtype=str)
        self._write_checked(self.conditions_path, arrays)

    def write_task_inputs(self, arrays: dict[str, np.ndarray]) -> None:
        """A task suite's source images (and masks, controls, source labels), sample i's being source i mod n."""
        self._write_checked(self.root / "task_inputs.npz", arrays)

    def load_task_inputs(self) -> dict[str, np.ndarray] | None:
        """What :meth:`write_task_inputs` wrote; None for a run without a task."""
        path = self.root / "task_inputs.npz"
        return self._load_checked(path) if path.is_file() else None

    def _write_checked(self, path: Path, arrays: dict[str, np.ndarray]) -> None:
        data = npz_bytes(arrays)
        atomic_write_bytes(path, data)
        atomic_write_bytes(path.with_suffix(".npz.sha256"), (sha256_bytes(data) + "\n").encode())

    def _load_checked(self, path: Path) -> dict[str, np.ndarray]:
        """An npz written by :meth:`_write_checked`; a file that fails its checksum is a :class:`StoreError`."""
        try:
            digest = path.with_suffix(".npz.sha256").read_text().strip()
        except OSError:
            digest = ""
        arrays = load_npz_checked(path, digest) if digest else None
        if arrays is None:
            raise StoreError(
                f"{path} is corrupt or does not match its sha256; run the suite again into this folder to rewrite it"
            )
        return arrays

    def load_conditions(self) -> tuple[np.ndarray | None, list[str] | None]:
        """(labels, prompts) as written by :meth:`write_conditions`; (None, None) when the run has none.
        A file that fails its checksum is a :class:`StoreError`, never silently ignored."""
        if not self.conditions_path.is_file():
            return None, None
        arrays = self._load_checked(self.conditions_path)
        prompts = arrays.get("prompts")
        return arrays.get("labels"), None if prompts is None else [str(p) for p in prompts]

    # -- cells -----------------------------------------------------------------------------------
    def cell_dir(self, cell_id: str) -> Path:
        return self.root / "cells" / safe_component(cell_id)

    def read_cell(self, cell_id: str) -> dict[str, Any] | None:
        """The cell's record, or None when it is missing, unreadable or fails its own checksum."""
        return read_record(self.cell_dir(cell_id) / "cell.json")

    def is_done(self, cell_id: str) -> bool:
        """Finished and intact: cell.json matches its own checksum and says done, and every file it
        lists (features, rows, grid, samples) matches its sha256."""
        record = self.read_cell(cell_id)
        if not record or record.get("status") != "done" or record_intact(record) is not True:
            return False
        files = record.get("files")
        if not isinstance(files, dict) or "features.npz" not in files or "rows.json" not in files:
            return False
        d = self.cell_dir(cell_id)
        if load_npz_checked(d / "features.npz", files["features.npz"]) is None:
            return False
        for name, sha in files.items():
            if name != "features.npz" and not file_matches(d / name, sha):
                return False
        return True

    def write_cell(
        self,
        cell_id: str,
        record: dict[str, Any],
        *,
        features: dict[str, np.ndarray],
        rows: list[dict[str, Any]],
        grid_png: bytes | None = None,
        samples: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Write a finished cell; ``cell.json`` goes last so a crash never leaves a 'done' half-cell."""
        d = self.cell_dir(cell_id)
        data = npz_bytes(features)
        atomic_write_bytes(d / "features.npz", data)
        files = {"features.npz": sha256_bytes(data)}
        if grid_png is not None:
            atomic_write_bytes(d / "grid.png", grid_png)
            files["grid.png"] = sha256_bytes(grid_png)
        if samples is not None:
            sdata = npz_bytes(samples)
            atomic_write_bytes(d / "samples.npz", sdata)
            files["samples.npz"] = sha256_bytes(sdata)
        rdata = json_bytes(rows)
        atomic_write_bytes(d / "rows.json", rdata)
        files["rows.json"] = sha256_bytes(rdata)
        atomic_write_json(d / "cell.json", seal_record({**record, "status": "done", "files": files}))

    def write_failed_cell(self, cell_id: str, record: dict[str, Any], error: str) -> None:
        atomic_write_json(
            self.cell_dir(cell_id) / "cell.json", seal_record({**record, "status": "failed", "error": error})
        )

    def load_features(self, cell_id: str) -> dict[str, np.ndarray]:
        record = self.read_cell(cell_id) or {}
        arrays = load_npz_checked(self.cell_dir(cell_id) / "features.npz", record.get("files", {}).get("features.npz"))
        if arrays is None:
            raise StoreError(f"features of cell {cell_id!r} in {self.root} are missing or corrupt")
        return arrays

    def load_samples(self, cell_id: str) -> dict[str, np.ndarray] | None:
        """The cell's stored sample images (``images`` uint8 (K,3,H,W), ``indices``, ...), or None."""
        record = self.read_cell(cell_id) or {}
        return load_npz_checked(self.cell_dir(cell_id) / "samples.npz", record.get("files", {}).get("samples.npz"))

    def iter_cells(self) -> Iterator[dict[str, Any]]:
        """Every cell record on disk (done or failed), with its folder under the key ``_dir``."""
        base = self.root / "cells"
        if not base.is_dir():
            return
        for d in sorted(base.iterdir()):
            record = read_record(d / "cell.json")
            if record is not None:
                yield {**record, "_dir": str(d)}

    # -- results ---------------------------------------------------------------------------------
    def cell_rows(self, cell_id: str) -> list[dict[str, Any]]:
        """The cell's result rows ([] when it has none); StoreError if rows.json fails its checksum."""
        record = self.read_cell(cell_id) or {}
        return _read_rows(self.cell_dir(cell_id) / "rows.json", (record.get("files") or {}).get("rows.json"))

    def collect_rows(self) -> pd.DataFrame:
        rows: list[dict[str, Any]] = []
        for rec in self.iter_cells():
            if rec.get("status") == "done":
                rows.extend(_read_rows(Path(rec["_dir"]) / "rows.json", (rec.get("files") or {}).get("rows.json")))
        return tidy_frame(rows)

    def write_results(self, df: pd.DataFrame) -> None:
        """The export (results.parquet, results.csv) stamped with the config hash and the cells it was made from."""
        write_export(self, df)

    def results(self) -> pd.DataFrame:
        """The tidy results table (from results.parquet, else assembled from the cells)."""
        path = self.root / "results.parquet"
        if path.is_file():
            try:
                return pd.read_parquet(path)
            except Exception as e:  # pyarrow raises its own types for a truncated or foreign file
                raise StoreError(
                    f"{path} is not a readable results table ({type(e).__name__}); run the suite "
                    "again into this folder to rewrite it"
                ) from None
        return self.collect_rows()

    # -- noise floors (evalkit.study.floors) --------------------------------------------------------
    @property
    def floors_path(self) -> Path:
        return self.root / "floors.json"

    def write_floors(self, floors: dict[str, Any]) -> None:
        """The run's real-vs-real noise floors (:func:`evalkit.study.floors.noise_floors`), sealed with their sha256."""
        atomic_write_json(self.floors_path, seal_record(floors))

    def read_floors(self) -> dict[str, Any] | None:
        """The floors as written by :meth:`write_floors`; None when absent, unreadable or failing their checksum."""
        return read_record(self.floors_path)


def _read_rows(path: Path, expected_sha256: str | None) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    data = path.read_bytes()
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        raise StoreError(
            f"{path} does not match its sha256 in cell.json (corrupt or edited); "
            "run the suite again to recompute the cell"
        )
    return json.loads(data)


def configs_seen(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """run.json's ``configs``: every config run into the folder, by config hash. A run.json written before
    folders kept them gives its one config."""
    seen = manifest.get("configs")
    if isinstance(seen, dict):
        return {str(h): e for h, e in seen.items() if isinstance(e, dict)}
    if not manifest.get("config_hash") or not isinstance(manifest.get("config"), dict):
        return {}
    entry = {k: manifest.get(k) for k in ("suite", "config", "cells")}
    return {
        str(manifest["config_hash"]): {
            **entry,
            "first_run": manifest.get("created_at"),
            "last_run": manifest.get("updated_at"),
        }
    }


def record_config(manifest: dict[str, Any], config_hash: str, entry: dict[str, Any], now: str) -> dict[str, Any]:
    """run.json's ``configs`` with ``entry`` (``{suite, config, cells}``) recorded as run now under ``config_hash``:
    the configs already seen kept (a run.json from before folders kept them gives its own config)."""
    seen = configs_seen(manifest)
    first = (seen.get(config_hash) or {}).get("first_run") or now
    return {**seen, config_hash: {**entry, "first_run": first, "last_run": now}}


def finished_cells(
    store: RunStore, manifest: dict[str, Any], cells: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """cell_id → record of every finished cell that a config run into the folder made: run.json's config's
    (``cells``: cell_id → record, as the reader or the runner knows them) first, then each other config's in
    ``configs`` whose cell on disk still carries the cell hash that config gave it, rows intact. Each cell once."""
    out = {c: rec for c, rec in cells.items() if rec.get("status") == "done"}
    for h, entry in configs_seen(manifest).items():
        if h == manifest.get("config_hash"):
            continue
        for e in entry.get("cells") or []:
            cid = e.get("cell_id") if isinstance(e, dict) else None
            if not cid or cid in out or not e.get("cell_hash"):
                continue
            rec = store.read_cell(cid)
            if rec and rec.get("status") == "done" and rec.get("cell_hash") == e["cell_hash"]:
                rows_sha = (rec.get("files") or {}).get("rows.json")
                if rows_sha and file_matches(store.cell_dir(cid) / "rows.json", rows_sha):
                    out[cid] = rec
    return out
