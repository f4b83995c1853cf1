"""The names of the built-in reference datasets, importable without torch (``--dry-run`` and the preflight
check a suite's ``reference.dataset`` against them; :mod:`evalkit.references.sets` re-exports them)."""

from __future__ import annotations

BUILTIN_DATASETS = ("mnist-heldout", "mnist-train")
