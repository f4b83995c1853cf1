"""One registry for every kind of part: adapters, samplers, metrics and extractors.

A :class:`Registry` finds a part by name in three places, in this order:

1. the built-ins, registered by importing the kind's own package (imported lazily, on first lookup, so
   ``import evalkit`` stays light and a lower layer can list names without importing an upper one);
2. installed plugins, under the entry-point group ``evalkit.<kind>s`` (``evalkit.adapters``,
   ``evalkit.samplers``, ``evalkit.metrics``, ``evalkit.extractors``);
3. where the kind allows it, a ``module:attr`` reference to any importable object.

Registering a name twice is an error: two parts must never answer to one name.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from evalkit.errors import ConfigError, UnknownNameError

T = TypeVar("T")


def is_callable_ref(text: str) -> bool:
    """``package.module:attr`` with identifiers only."""
    mod, sep, attr = text.partition(":")
    return bool(sep) and all(part.isidentifier() for part in mod.split(".")) and attr.isidentifier()


class Registry(Generic[T]):
    """Named parts of one kind. ``register`` adds, ``get`` finds, ``names`` lists."""

    def __init__(self, kind: str, *, builtins: str, allow_refs: bool = False):
        self.kind = kind
        self.group = f"evalkit.{kind}s"
        self._builtins_module = builtins
        self._allow_refs = allow_refs
        self._items: dict[str, T] = {}
        self._loading = False

    def register(self, name: str, obj: T | None = None) -> Any:
        """``reg.register("name", obj)``, or as a decorator ``@reg.register("name")``."""
        if obj is None:
            return lambda o: self.register(name, o)
        if name in self._items and self._items[name] is not obj:
            raise ConfigError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj
        return obj

    def _load_builtins(self) -> None:
        if not self._loading:
            self._loading = True  # the built-ins module registers into this registry while importing
            importlib.import_module(self._builtins_module)

    def _plugins(self) -> dict[str, Any]:
        return {ep.name: ep for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        """Built-in and plugin names, sorted (``module:attr`` references are not listed)."""
        self._load_builtins()
        return sorted({*self._items, *self._plugins()})

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self.names() or (self._allow_refs and is_callable_ref(name)))

    def get(self, name: str) -> T:
        """The part named ``name``; a :class:`ConfigError` listing the known names otherwise."""
        self._load_builtins()
        if name in self._items:
            return self._items[name]
        plugins = self._plugins()
        if name in plugins:
            return self.register(name, plugins[name].load())
        if self._allow_refs and is_callable_ref(name):
            module, _, attr = name.partition(":")
            try:
                return getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError) as e:
                raise ConfigError(f"{self.kind} {name!r}: cannot import {attr!r} from module {module!r}: {e}") from None
        refs = " or a 'module:function' callable" if self._allow_refs else ""
        raise UnknownNameError(f"unknown {self.kind} {name!r}; expected one of: {', '.join(self.names())}{refs}")


Factory = Callable[..., Any]

ADAPTERS: Registry[Factory] = Registry("adapter", builtins="evalkit.generate", allow_refs=True)
SAMPLERS: Registry[Any] = Registry("sampler", builtins="evalkit.generate.samplers")
METRICS: Registry[Any] = Registry("metric", builtins="evalkit.metrics")
EXTRACTORS: Registry[Factory] = Registry("extractor", builtins="evalkit.features")
