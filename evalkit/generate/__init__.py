"""Generation: the adapter contract, the shared sampling loop, samplers, seeding and the built-in adapters.

Adapters are found by name in :data:`evalkit.registry.ADAPTERS`: the built-ins below, the
``evalkit.adapters`` entry point group, or ``module:function`` callables that return an :class:`Adapter`.
The built-ins import their heavy libraries only when built, and importing this package imports no torch
(``evalkit list`` and suite validation read the names): the adapter contract (:mod:`evalkit.generate.adapter`)
loads on first use of ``Adapter``, ``GeneratedBatch`` or ``GenerationRequest``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import TYPE_CHECKING, Any

from evalkit.errors import ConfigError
from evalkit.lazy import lazy_exports
from evalkit.registry import ADAPTERS

if TYPE_CHECKING:
    from evalkit.generate.adapter import Adapter, GeneratedBatch, GenerationRequest


class _BuiltinAdapter:
    """A built-in adapter's factory: it imports its class only when called or inspected, and
    ``inspect.signature`` of it is the class's own (suite validation checks option names against it)."""

    builtin = True  # shipped with evalkit: the preflight need not import it to check a model without options

    def __init__(self, module: str, cls: str):
        self._module, self._cls = module, cls

    def target(self) -> type[Adapter]:
        return getattr(importlib.import_module(self._module), self._cls)

    @property
    def __signature__(self) -> inspect.Signature:
        return inspect.signature(self.target())

    def __call__(self, **kw: Any) -> Adapter:
        return self.target()(**kw)

    def __repr__(self) -> str:
        return f"<adapter factory {self._module}.{self._cls}>"


ADAPTERS.register("zoo", _BuiltinAdapter("evalkit.generate.zoo_adapter", "ZooMnistAdapter"))
ADAPTERS.register("noise", _BuiltinAdapter("evalkit.generate.zoo_adapter", "NoiseAdapter"))
ADAPTERS.register("diffusers", _BuiltinAdapter("evalkit.generate.diffusers_adapter", "DiffusersAdapter"))
ADAPTERS.register("images", _BuiltinAdapter("evalkit.generate.images_adapter", "ImagesAdapter"))
ADAPTERS.register("http", _BuiltinAdapter("evalkit.generate.http_adapter", "HttpAdapter"))


def available_adapters() -> list[str]:
    return ADAPTERS.names()


def build_adapter(adapter: str, *, device: str = "cpu", **options: Any) -> Adapter:
    """Instantiate adapter ``adapter`` (a registered name or ``module:function``) with ``options``."""
    from evalkit.generate.adapter import Adapter

    obj = ADAPTERS.get(adapter)(device=device, **options)
    if not isinstance(obj, Adapter):
        raise ConfigError(f"adapter {adapter!r} returned {type(obj).__name__}, expected an evalkit Adapter")
    return obj


__all__ = ["Adapter", "GeneratedBatch", "GenerationRequest", "available_adapters", "build_adapter"]
_CONTRACT = ("Adapter", "GeneratedBatch", "GenerationRequest")  # from evalkit.generate.adapter (torch)

__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(_CONTRACT, "adapter"))
