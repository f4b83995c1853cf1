"""The run folder: atomic files, the row schema and the one reader (:func:`read_run` → :class:`RunData`).

``store`` knows nothing of orchestration: the runner writes through :class:`RunStore`; the report, the
gate and the Python API read through :func:`read_run`.

The file helpers (numpy only) load with the package; the folder, the reader and the row schema import pandas
and load on first use of their names, so ``evalkit --help`` does not pay for pandas.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evalkit.errors import StoreError
from evalkit.lazy import lazy_exports
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

if TYPE_CHECKING:
    from evalkit.store.folder import RunStore
    from evalkit.store.reader import RunData, join_features, read_run, read_runs, split_features
    from evalkit.store.rows import RESULT_COLUMNS, tidy_frame

_EXPORTS = {  # pandas: loaded on first use
    "RunStore": "folder",
    "RunData": "reader",
    "join_features": "reader",
    "read_run": "reader",
    "read_runs": "reader",
    "split_features": "reader",
    "RESULT_COLUMNS": "rows",
    "tidy_frame": "rows",
}

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
