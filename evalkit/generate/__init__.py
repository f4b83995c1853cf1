"""Generation: the adapter contract, the shared sampling loop, samplers, seeding and the built-in adapters.

Adapters are found by name in :data:`evalkit.registry.ADAPTERS`: the built-ins below, the
``evalkit.adapters`` entry point group, or ``module:function`` callables that return an :class:`Adapter`.
The built-ins import their heavy libraries only when built.
"""

from __future__ import annotations

from typing import Any

from evalkit.errors import ConfigError
from evalkit.generate.adapter import Adapter, GeneratedBatch, GenerationRequest
from evalkit.registry import ADAPTERS


@ADAPTERS.register("zoo")
def _zoo(**kw: Any) -> Adapter:
    from evalkit.generate.zoo_adapter import ZooMnistAdapter

    return ZooMnistAdapter(**kw)


@ADAPTERS.register("noise")
def _noise(**kw: Any) -> Adapter:
    from evalkit.generate.zoo_adapter import NoiseAdapter

    return NoiseAdapter(**kw)


@ADAPTERS.register("diffusers")
def _diffusers(**kw: Any) -> Adapter:
    from evalkit.generate.diffusers_adapter import DiffusersAdapter

    return DiffusersAdapter(**kw)


def available_adapters() -> list[str]:
    return ADAPTERS.names()


def build_adapter(adapter: str, *, device: str = "cpu", **options: Any) -> Adapter:
    """Instantiate adapter ``adapter`` (a registered name or ``module:function``) with ``options``."""
    obj = ADAPTERS.get(adapter)(device=device, **options)
    if not isinstance(obj, Adapter):
        raise ConfigError(f"adapter {adapter!r} returned {type(obj).__name__}, expected an evalkit Adapter")
    return obj


__all__ = ["Adapter", "GeneratedBatch", "GenerationRequest", "available_adapters", "build_adapter"]
