"""Model adapters, found by name: built-ins, the ``evalkit.adapters`` entry point group, or
``module:function`` callables that return an :class:`Adapter`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from evalkit.adapters.base import Adapter, GeneratedBatch, GenerationRequest

AdapterFactory = Callable[..., Adapter]


def _zoo(**kw: Any) -> Adapter:
    from evalkit.adapters.zoo import ZooMnistAdapter

    return ZooMnistAdapter(**kw)


def _noise(**kw: Any) -> Adapter:
    from evalkit.adapters.zoo import NoiseAdapter

    return NoiseAdapter(**kw)


def _diffusers(**kw: Any) -> Adapter:
    from evalkit.adapters.diffusers_pipeline import DiffusersAdapter

    return DiffusersAdapter(**kw)


_BUILTIN: dict[str, AdapterFactory] = {"zoo": _zoo, "noise": _noise, "diffusers": _diffusers}


def _entry_point_adapters() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group="evalkit.adapters")}


def available_adapters() -> list[str]:
    return sorted({*_BUILTIN, *_entry_point_adapters()})


def build_adapter(adapter: str, *, device: str = "cpu", **options: Any) -> Adapter:
    """Instantiate adapter ``adapter`` (a registered name or ``module:function``) with ``options``."""
    if adapter in _BUILTIN:
        factory = _BUILTIN[adapter]
    elif adapter in (eps := _entry_point_adapters()):
        factory = eps[adapter].load()
    elif ":" in adapter:
        module, _, fn = adapter.partition(":")
        try:
            factory = getattr(importlib.import_module(module), fn)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"adapter {adapter!r}: cannot import {fn!r} from module {module!r}: {e}") from None
    else:
        raise ValueError(f"unknown adapter {adapter!r}; expected one of: {', '.join(available_adapters())} "
                         "or 'module:function'")
    obj = factory(device=device, **options)
    if not isinstance(obj, Adapter):
        raise TypeError(f"adapter {adapter!r} returned {type(obj).__name__}, expected an evalkit Adapter")
    return obj


__all__ = ["Adapter", "GeneratedBatch", "GenerationRequest", "available_adapters", "build_adapter"]
