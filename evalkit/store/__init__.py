"""The run folder: atomic files, the row schema and the one reader (:func:`read_run` → :class:`RunData`).

``store`` knows nothing of orchestration: the runner writes through :class:`RunStore`; the report, the
gate and the Python API read through :func:`read_run`.
"""

from evalkit.errors import StoreError
from evalkit.store.files import (
    atomic_write_bytes,
    atomic_write_json,
    load_npz_checked,
    npz_bytes,
    record_intact,
    safe_component,
    seal_record,
    sha256_bytes,
    sha256_file,
)
from evalkit.store.folder import RunStore
from evalkit.store.reader import RunData, join_features, read_run, read_runs, split_features
from evalkit.store.rows import RESULT_COLUMNS, tidy_frame

__all__ = [
    "RESULT_COLUMNS",
    "RunData",
    "RunStore",
    "StoreError",
    "atomic_write_bytes",
    "atomic_write_json",
    "join_features",
    "load_npz_checked",
    "npz_bytes",
    "read_run",
    "read_runs",
    "record_intact",
    "safe_component",
    "seal_record",
    "sha256_bytes",
    "sha256_file",
    "split_features",
    "tidy_frame",
]
