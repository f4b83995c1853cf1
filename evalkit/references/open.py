"""Open a reference set from its suite spec: a built-in dataset, images (a folder, zip or tar of image files, or an
``.npz`` image array), or a statistics file; and tell which of them a command-line argument names."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from evalkit.references.arrays import NpzImages, is_stats_file
from evalkit.references.names import train_spec
from evalkit.references.sets import (
    _SPEC_KEYS,
    BUILTIN_DATASETS,
    ArrayReference,
    FileReference,
    ReferenceSet,
    ReferenceSetError,
)
from evalkit.references.stats import StatsReference, is_torch_file


def open_reference(spec: dict[str, Any], *, base_dir: Path | None = None) -> ReferenceSet:
    """Open a reference from its spec; relative paths resolve against ``base_dir`` (the suite's folder)."""
    if not isinstance(spec, dict):
        raise ReferenceSetError(f"a reference spec must be a mapping, got {type(spec).__name__}")
    spec = {k: v for k, v in spec.items() if k != "train"}  # the training split: open_train
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ReferenceSetError(f"unknown reference key(s) {sorted(unknown)}; allowed: {sorted(_SPEC_KEYS)}")
    kinds = [k for k in ("dataset", "path", "stats") if k in spec]
    if len(kinds) != 1:
        raise ReferenceSetError(f"a reference spec needs exactly one of 'dataset', 'path', 'stats'; got {sorted(spec)}")
    samples = spec.get("samples")
    if samples is not None and (not isinstance(samples, int) or isinstance(samples, bool) or samples < 1):
        raise ReferenceSetError(f"reference 'samples' must be a positive integer, got {samples!r}")

    def resolve(p: str) -> Path:
        path = Path(os.path.expanduser(str(p)))
        return path if path.is_absolute() or base_dir is None else Path(base_dir) / path

    if "dataset" in spec:
        return _open_dataset(str(spec["dataset"]), samples, spec.get("name"))
    if "path" in spec:
        return open_images(
            resolve(spec["path"]), samples=samples, strict=bool(spec.get("strict", False)), name=spec.get("name")
        )
    if samples is not None:
        raise ReferenceSetError("'samples' cannot subset a statistics reference (it holds no images)")
    return StatsReference(resolve(spec["stats"]), name=spec.get("name"))


def open_train(spec: dict[str, Any], *, base_dir: Path | None = None) -> ReferenceSet | None:
    """The training split a reference spec names under ``train`` (None where it has none), read as references are:
    images per sample (a statistics file cannot stand for a training split)."""
    if not isinstance(spec, dict) or spec.get("train") is None:
        return None
    train = open_reference(train_spec(spec["train"], base_dir=base_dir), base_dir=base_dir)
    if train.stats is not None:
        raise ReferenceSetError(f"reference.train {spec['train']!r} holds statistics; a training split needs images")
    return train


def open_images(
    path: Path, *, samples: int | None = None, strict: bool = False, name: str | None = None, role: str = "reference"
) -> ReferenceSet:
    """Images at ``path``: an ``.npz`` image array (:class:`NpzImages`), else a folder, zip or tar of image files
    (:class:`FileReference`). ``role`` names them in messages ("reference", "generated images")."""
    if path.suffix.lower() == ".npz" and path.is_file():
        return NpzImages(path, samples=samples, name=name)
    return FileReference(path, samples=samples, strict=strict, name=name, role=role)


def spec_for(arg: str, *, strict: bool = False) -> dict[str, Any]:
    """The reference spec a command-line argument names: a built-in dataset, statistics (an ``.npz`` holding ``mu``,
    a torch-fidelity ``.pt``), or images (a folder, zip, tar or ``.npz`` array; ``strict`` for image files)."""
    if arg in BUILTIN_DATASETS and not Path(arg).exists():
        return {"dataset": arg}
    path = Path(os.path.expanduser(arg))
    if path.is_file() and (is_stats_file(path) or is_torch_file(path)):
        return {"stats": str(path)}
    return {"path": str(path), **({"strict": True} if strict else {})}


def _open_dataset(name: str, samples: int | None, display: str | None) -> ArrayReference:
    if name not in BUILTIN_DATASETS:
        raise ReferenceSetError(f"unknown dataset {name!r}; known datasets: {', '.join(BUILTIN_DATASETS)}")
    from evalkit.zoo import data

    split = data.mnist_split()
    part = "heldout" if name == "mnist-heldout" else "train"
    x, y = _field(split, f"{part}_x"), _field(split, f"{part}_y")
    if samples is not None:
        x, y = x[:samples], (None if y is None else y[:samples])
    return ArrayReference(display or (name if samples is None else f"{name}[:{samples}]"), x, y)


def _field(obj: Any, key: str) -> Any:
    return obj[key] if isinstance(obj, dict) else getattr(obj, key)
