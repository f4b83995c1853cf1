"""The model cache: one model in memory at a time, warmed up once per sampler, and the weights guard
that refuses to resume a run folder onto cells made by other weights."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from evalkit.errors import ConfigError, StoreError
from evalkit.generate import Adapter, build_adapter
from evalkit.suite import Cell


class ModelChangedError(StoreError):
    """The run folder's finished cells were computed by other weights than the model loaded now."""


def weights_identity(info: dict[str, Any]) -> dict[str, Any]:
    """The parts of an adapter's ``info()`` that name its weights: hashes (``*sha256``) and a hub revision."""
    return {k: v for k, v in info.items() if k.endswith("sha256") or k == "revision"}


def stale_cells(model: str, info: dict[str, Any], finished: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """Finished cells (cell_id, record) of ``model`` whose recorded weights differ from ``info``'s."""
    now = weights_identity(info)
    if not now:
        return {}  # the adapter names no weights (noise, most plugins): nothing to compare
    stale = {}
    for cell_id, record in finished:
        then = weights_identity(record.get("model_info") or {})
        if then and then != now:  # cells written before cell.json carried model_info are not judged
            stale[cell_id] = then
    return stale


class ModelCache:
    """Builds adapters on demand, keeping one in memory (grids are ordered model-major)."""

    def __init__(self, device: str, on_build: Callable[[str, dict[str, Any]], None]):
        self.device = device
        self.on_build = on_build  # called with (model name, info) after each build: the weights guard
        self._adapters: dict[str, Adapter] = {}
        self.info: dict[str, dict[str, Any]] = {}  # every model built in this run, for run.json
        self._warmed: set[tuple[str, str]] = set()  # (model, sampler label) pairs already warmed up

    def get(self, cell: Cell) -> Adapter:
        key = cell.model.name
        if key not in self._adapters:
            for other in list(self._adapters):
                self.info[other] = self._adapters[other].info()  # some adapters fill info in lazily
                self._adapters.pop(other).close()
            try:
                self._adapters[key] = build_adapter(cell.model.adapter, device=self.device, **cell.model.options)
            except TypeError as e:  # an option the adapter's factory does not take
                raise ConfigError(f"model {key!r} (adapter {cell.model.adapter!r}): {e}") from e
            self._warmed = {w for w in self._warmed if w[0] != key}  # a fresh model warms up again
            self.on_build(key, self._adapters[key].info())
        return self._adapters[key]

    def needs_warmup(self, cell: Cell) -> bool:
        """True once per model × sampler (the first calls pay for lazy init and allocator growth)."""
        key = (cell.model.name, cell.sampler.label)
        if key in self._warmed:
            return False
        self._warmed.add(key)
        return True

    def all_info(self) -> dict[str, dict[str, Any]]:
        return {**self.info, **{name: a.info() for name, a in self._adapters.items()}}

    def close(self) -> None:
        for a in self._adapters.values():
            a.close()
