"""The names of the built-in reference datasets, importable without torch (``--dry-run`` and the preflight
check a suite's ``reference.dataset`` against them; :mod:`evalkit.references.sets` re-exports them), and what a
suite's ``reference.train`` string names (:func:`train_spec`, for the preflight and the runner alike)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BUILTIN_DATASETS = ("mnist-heldout", "mnist-train")


def train_spec(train: str | dict[str, Any], *, base_dir: Path | None = None) -> dict[str, Any]:
    """A suite's ``reference.train`` as a reference spec: a mapping as it is; a string names a built-in dataset
    (unless a file or folder of that name exists beside the suite), else a path to images."""
    if isinstance(train, dict):
        return dict(train)
    local = Path(os.path.expanduser(train))
    local = local if local.is_absolute() or base_dir is None else Path(base_dir) / local
    return {"dataset": train} if train in BUILTIN_DATASETS and not local.exists() else {"path": str(train)}
