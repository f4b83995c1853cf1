"""Lazy package exports (PEP 562): a package names what it re-exports and from which submodule, and the
submodule is imported on first use. So ``evalkit --help`` and ``evalkit list`` import no torch, pandas or
scipy, while ``from evalkit.store import read_run`` keeps working. Imports nothing from evalkit."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``: ``name`` comes from ``package.<exports[name]>`` and is
    kept in the package's namespace after its first use."""
    module = sys.modules[package]

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{exports[name]}"), name)
        setattr(module, name, value)
        return value

    def __dir__() -> list[str]:
        return sorted({*vars(module), *exports})

    return __getattr__, __dir__
