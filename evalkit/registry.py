"""One registry for every kind of part: adapters, samplers, metrics and extractors.

A :class:`Registry` finds a part by name in three places, in this order:

1. the built-ins, registered by importing the kind's own package (imported lazily, on first lookup, so
   ``import evalkit`` stays light and a lower layer can list names without importing an upper one). A
   package may :meth:`~Registry.declare` a built-in by name and module instead: the name is listed at once,
   and the module (with its torch and the like) is imported only when the part is looked up; importing it
   registers the part in the declaration's place;
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

from evalkit.errors import ConfigError, DependencyError, UnknownNameError

T = TypeVar("T")


def is_callable_ref(text: str) -> bool:
    """``package.module:attr`` with identifiers only."""
    mod, sep, attr = text.partition(":")
    return bool(sep) and all(part.isidentifier() for part in mod.split(".")) and attr.isidentifier()


class _Declared:
    """A built-in known by name whose module registers it when imported (see :meth:`Registry.declare`)."""

    __slots__ = ("module",)

    def __init__(self, module: str):
        self.module = module

    def __repr__(self) -> str:
        return f"<declared, registered by importing {self.module}>"


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
        held = self._items.get(name)
        if held is not None and held is not obj and not _replaces(held, obj):
            raise ConfigError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = obj
        return obj

    def declare(self, name: str, module: str) -> None:
        """List built-in ``name`` now; import ``module`` (which registers it) only when the part is looked up.

        Only a part defined in ``module`` itself takes the declaration's place: anything else registered under
        the name is a second registration, an error as always."""
        if name in self._items:
            raise ConfigError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = _Declared(module)  # type: ignore[assignment]

    def _resolve(self, name: str) -> T:
        held = self._items[name]
        if not isinstance(held, _Declared):
            return held
        try:
            importlib.import_module(held.module)  # registers the part in the declaration's place
        except ImportError as e:
            raise DependencyError(f"{self.kind} {name!r}: cannot import {held.module}: {e}") from e
        part = self._items.get(name)
        if part is None or isinstance(part, _Declared):
            raise ConfigError(f"{self.kind} {name!r} is declared in {held.module}, which does not register it")
        return part

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
            return self._resolve(name)
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


def _replaces(declared: Any, obj: Any) -> bool:
    """``obj`` is the part a declaration promised: defined in the declared module."""
    return isinstance(declared, _Declared) and getattr(obj, "__module__", None) == declared.module


Factory = Callable[..., Any]

ADAPTERS: Registry[Factory] = Registry("adapter", builtins="evalkit.generate", allow_refs=True)
SAMPLERS: Registry[Any] = Registry("sampler", builtins="evalkit.generate.samplers")
METRICS: Registry[Any] = Registry("metric", builtins="evalkit.metrics")
EXTRACTORS: Registry[Factory] = Registry("extractor", builtins="evalkit.features")
