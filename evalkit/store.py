"""The run directory: manifest, atomic writes, per-cell artifacts, a lock. No orchestration here.

Layout::

    RUN/run.json                       config, config hash, environment, versions, git commit
    RUN/.lock                          held (flock) while a process writes the run
    RUN/cells/<cell_id>/cell.json      the cell's spec, status, timings, checksums; written LAST,
                                       so its presence with status "done" marks a finished cell
    RUN/cells/<cell_id>/features.npz   per-sample extractor outputs, keys "<extractor>/<output>"
    RUN/cells/<cell_id>/grid.png       a sample grid
    RUN/cells/<cell_id>/samples.npz    the first K images (uint8) with their indices and labels/prompts,
                                       the same K across cells, so reports can line cells up
    RUN/cells/<cell_id>/rows.json      the cell's result rows
    RUN/results.parquet, results.csv   all rows, tidy (one row per cell × metric)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# The tidy results row (DESIGN.md). Throughput is reported as rows too (metric "images_per_s", ...);
# every row also carries its cell's cost columns so quality can be joined with speed directly.
RESULT_COLUMNS = [
    "run_id", "suite", "model", "sampler", "steps", "guidance", "n", "seed",
    "metric", "value", "std", "ci_low", "ci_high", "extractor", "weights_id", "mode",
    "model_calls", "nfe", "s_per_image", "device", "config_hash",
]


def tidy_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows → DataFrame with the standard columns first (missing ones as NaN)."""
    df = pd.DataFrame(rows)
    for col in RESULT_COLUMNS:
        if col not in df.columns:
            df[col] = pd.Series(dtype="float64")
    return df[RESULT_COLUMNS + [c for c in df.columns if c not in RESULT_COLUMNS]]


class StoreError(RuntimeError):
    """A run folder that cannot be used: locked by another process, corrupt, or from another suite."""


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode())


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def load_npz_checked(path: Path, expected_sha256: str | None) -> dict[str, np.ndarray] | None:
    """Arrays from ``path`` if it exists and matches its checksum, else None (caller recomputes)."""
    path = Path(path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError):
        return None


_SAFE_ID = re.compile(r"[^A-Za-z0-9._=-]+")


def safe_component(text: str) -> str:
    """A path component that cannot escape its folder ('..', '/', odd characters)."""
    out = _SAFE_ID.sub("-", str(text)).strip(".-") or "x"
    return out[:120]


class RunStore:
    """One run folder. Open it with :meth:`open` (takes the lock) or read it with ``RunStore(path)``."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._lock_fd: int | None = None

    # -- locking ---------------------------------------------------------------------------------
    def acquire_lock(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
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
        if not self.manifest_path.is_file():
            return None
        return json.loads(self.manifest_path.read_text())

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        atomic_write_json(self.manifest_path, manifest)

    # -- cells -----------------------------------------------------------------------------------
    def cell_dir(self, cell_id: str) -> Path:
        return self.root / "cells" / safe_component(cell_id)

    def read_cell(self, cell_id: str) -> dict[str, Any] | None:
        path = self.cell_dir(cell_id) / "cell.json"
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return None

    def is_done(self, cell_id: str) -> bool:
        """Finished and intact: cell.json says done and the features match their checksum."""
        record = self.read_cell(cell_id)
        if not record or record.get("status") != "done":
            return False
        sha = record.get("files", {}).get("features.npz")
        return load_npz_checked(self.cell_dir(cell_id) / "features.npz", sha) is not None

    def write_cell(self, cell_id: str, record: dict[str, Any], *, features: dict[str, np.ndarray],
                   rows: list[dict[str, Any]], grid_png: bytes | None = None,
                   samples: dict[str, np.ndarray] | None = None) -> None:
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
        atomic_write_json(d / "rows.json", rows)
        atomic_write_json(d / "cell.json", {**record, "status": "done", "files": files})

    def write_failed_cell(self, cell_id: str, record: dict[str, Any], error: str) -> None:
        atomic_write_json(self.cell_dir(cell_id) / "cell.json", {**record, "status": "failed", "error": error})

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
            rec_path = d / "cell.json"
            if rec_path.is_file():
                with contextlib.suppress(json.JSONDecodeError):
                    yield {**json.loads(rec_path.read_text()), "_dir": str(d)}

    # -- results ---------------------------------------------------------------------------------
    def cell_rows(self, cell_id: str) -> list[dict[str, Any]]:
        path = self.cell_dir(cell_id) / "rows.json"
        return json.loads(path.read_text()) if path.is_file() else []

    def collect_rows(self) -> pd.DataFrame:
        rows: list[dict[str, Any]] = []
        for rec in self.iter_cells():
            if rec.get("status") == "done":
                p = Path(rec["_dir"]) / "rows.json"
                if p.is_file():
                    rows.extend(json.loads(p.read_text()))
        return tidy_frame(rows)

    def write_results(self, df: pd.DataFrame) -> None:
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        atomic_write_bytes(self.root / "results.parquet", buf.getvalue())
        atomic_write_bytes(self.root / "results.csv", df.to_csv(index=False).encode())

    def results(self) -> pd.DataFrame:
        """The tidy results table (from results.parquet, else assembled from the cells)."""
        path = self.root / "results.parquet"
        if path.is_file():
            return pd.read_parquet(path)
        return self.collect_rows()
