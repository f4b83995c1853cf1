"""Finished images as a table: a manifest (CSV, JSONL or parquet) or a folder ``model/sampler/steps/guidance/*.png``.

What the ``images`` adapter (:mod:`evalkit.generate.images_adapter`) reads, and what an images suite's grid is
filled from (:mod:`evalkit.suite.image_grid`). It lives here, below the adapter, because the suite validator reads
it to fill the grid, and ``suite`` imports nothing from ``generate``.

A manifest has a ``path`` column (relative to the manifest's folder, or absolute) and any of :data:`COLUMNS`.
An empty value (a blank CSV field, JSON null, a parquet NaN) is a missing one. A column evalkit does not read is
an error when its name is close to one it does (``guidence``: a typo would silently drop the column), else a
warning naming it. In a folder, every image (:data:`IMAGE_EXTENSIONS`; other files are skipped) lies exactly four
folders down, ``<model>/<sampler>/<steps>/<guidance>/<file>``, e.g. ``sdxl/euler/30/7.5/0001.png``.

**Which image is sample i** of its cell (the cell's images in this order, the first ``samples`` of them used):

1. an ``index`` column: the image whose index is i (0-based; every row gives one, no cell repeats one);
2. else a ``seed`` column: the cell's images sorted by seed (so cells that used the same seeds pair up sample by
   sample, as evalkit's own cells do: the paired comparisons rely on it);
3. else the manifest's row order, or in a folder the file names in natural order (``2.png`` before ``10.png``).
"""

from __future__ import annotations

import csv
import difflib
import json
import math
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError
from evalkit.imagefiles import IMAGE_EXTENSIONS

# as reference folders (evalkit.references.sources, which suite may not import; the images tests hold them equal)
MANIFEST_SUFFIXES = (".csv", ".jsonl", ".parquet")
GRID = ("model", "sampler", "steps", "guidance")
COLUMNS = {
    "path": "the image file (relative to the manifest's folder, or absolute)",
    "model": "model name (a model of the suite)",
    "sampler": "sampler label, free text (e.g. dpmpp_2m_karras_comfy)",
    "steps": "integer ≥ 1",
    "guidance": "number ≥ 0",
    "index": "sample index in its cell, 0-based",
    "seed": "the seed the image was made with (orders a cell's images)",
    "prompt": "the prompt of the image (must be the suite's prompt of its sample)",
    "class": "the class label of the image (must be the suite's class of its sample)",
    "nfe": "network evaluations per image, as reported",
    "model_calls": "denoiser calls per image, as reported",
    "seconds": "seconds to generate the image, as reported",
    "cost": "cost of the image (any currency), as reported",
}
_INTS = {"steps": 1, "index": 0, "seed": 0, "class": 0, "nfe": 0, "model_calls": 0}  # column → minimum
_FLOATS = ("guidance", "seconds", "cost")
_LABELS = ("model", "sampler")
SHOWN = 10  # files named in one message


class TableError(ConfigError):
    """A manifest or folder that cannot be read; ``field`` is where (file and line), ``message`` what was wrong."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


@dataclass(frozen=True)
class ImageRow:
    """One image: its file, where it was listed (for messages), its grid point and what the manifest reports."""

    path: Path
    where: str
    model: str | None = None
    sampler: str | None = None
    steps: int | None = None
    guidance: float | None = None
    index: int | None = None
    seed: int | None = None
    prompt: str | None = None
    label: int | None = None  # the ``class`` column
    nfe: int | None = None
    model_calls: int | None = None
    seconds: float | None = None
    cost: float | None = None

    def key(self) -> tuple[str | None, int | None, float | None]:
        return self.sampler, self.steps, self.guidance


@dataclass
class ImageTable:
    """The images of a manifest or folder (``source``), with the columns it has and the order of its cells."""

    source: Path
    kind: str  # "manifest" or "folder"
    rows: list[ImageRow]
    columns: tuple[str, ...]
    order: str = field(init=False)

    def __post_init__(self) -> None:
        self.order = "index" if "index" in self.columns else "seed" if "seed" in self.columns else self.kind

    def models(self) -> list[str | None]:
        return list(dict.fromkeys(r.model for r in self.rows))

    def select(self, model: str | None) -> ImageTable:
        """The rows of one model (None: all); a model the table does not hold is an error naming those it does."""
        if model is None:
            return self
        if "model" not in self.columns:
            raise TableError(str(self.source), f"has no 'model' column, so it cannot pick model {model!r}")
        rows = [r for r in self.rows if r.model == model]
        if not rows:
            raise TableError(str(self.source), f"has no images of model {model!r}; it has: {_listed(self.models())}")
        return ImageTable(self.source, self.kind, rows, self.columns)

    def cells(self) -> dict[tuple[str | None, int | None, float | None], list[ImageRow]]:
        """(sampler, steps, guidance) → the cell's images in sample order (see the module docstring)."""
        out: dict[tuple[str | None, int | None, float | None], list[ImageRow]] = {}
        for r in self.rows:
            out.setdefault(r.key(), []).append(r)
        return {k: self._ordered(k, v) for k, v in out.items()}

    def cell(self, sampler: str, steps: int, guidance: float) -> list[ImageRow]:
        """One cell's images in sample order; a grid column the table lacks matches every value."""
        want = {"sampler": sampler, "steps": steps, "guidance": float(guidance)}
        rows = [r for r in self.rows if all(c not in self.columns or getattr(r, c) == v for c, v in want.items())]
        return self._ordered((sampler, steps, guidance), rows)

    def _ordered(self, key: Any, rows: list[ImageRow]) -> list[ImageRow]:
        if self.order not in ("index", "seed"):
            return rows
        by = "index" if self.order == "index" else "seed"
        seen: dict[int, ImageRow] = {}
        for r in rows:
            v = getattr(r, by)
            if v in seen:
                raise TableError(
                    r.where, f"{by} {v} appears twice in one cell ({_cell_text(key)}): also {seen[v].where}"
                )
            seen[v] = r
        return [seen[v] for v in sorted(seen)]


def read_table(options: dict[str, Any], base: Path) -> ImageTable:
    """The images the adapter options name: ``manifest`` (a file) or ``folder``, relative to ``base``."""
    given = [k for k in ("manifest", "folder") if options.get(k) is not None]
    if len(given) != 1:
        raise TableError(
            "manifest/folder",
            f"expected exactly one of 'manifest' (a .csv, .jsonl or .parquet) or 'folder'; got {given or 'neither'}",
        )
    kind = given[0]
    value = options[kind]
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        raise TableError(kind, f"expected a path; got {value!r}")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if kind == "folder":
        return _read_folder(path, "folder")
    if not path.is_file():
        raise TableError("manifest", f"no such file: {path}")
    return _read_manifest(path)


# -- manifests ---------------------------------------------------------------------------------------------------
def _read_manifest(path: Path) -> ImageTable:
    suffix = path.suffix.lower()
    if suffix not in MANIFEST_SUFFIXES:
        raise TableError(str(path), f"expected a manifest ending in {', '.join(MANIFEST_SUFFIXES)}")
    try:
        records, columns = _records(path, suffix)
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as e:
        raise TableError(str(path), f"cannot read the manifest: {e}") from None
    if "path" not in columns:
        raise TableError(str(path), f"has no 'path' column (the image files); its columns: {_listed(columns)}")
    known = _check_columns(path, columns)
    rows = [_row(rec, where, path.parent, known) for where, rec in records]
    if not rows:
        raise TableError(str(path), "lists no images")
    _check_files(path, rows)
    _check_complete(path, rows, known)
    return ImageTable(path, "manifest", rows, tuple(c for c in COLUMNS if c in known))


def _records(path: Path, suffix: str) -> tuple[list[tuple[str, dict[str, Any]]], list[str]]:
    """(where, record) per row, and the columns, in file order."""
    if suffix == ".parquet":
        import pandas as pd

        df = pd.read_parquet(path)
        recs = [{k: _plain(v) for k, v in r.items()} for r in df.to_dict("records")]
        return [(f"{path.name} row {i + 1}", r) for i, r in enumerate(recs)], [str(c) for c in df.columns]
    with path.open(newline="", encoding="utf-8") as f:
        if suffix == ".csv":
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            if len(set(columns)) != len(columns):
                raise ValueError(f"a column appears twice in the header: {columns}")
            out = []
            for rec in reader:
                extra = rec.pop(None, None)  # type: ignore[call-overload]
                if extra:
                    raise ValueError(f"line {reader.line_num} has more fields than the header")
                out.append((f"{path.name} line {reader.line_num}", {k.strip(): v for k, v in rec.items()}))
            return out, columns
        out, columns = [], {}
        for n, line in enumerate(f, 1):
            if line.strip():
                rec = json.loads(line)
                if not isinstance(rec, dict):
                    raise ValueError(f"line {n}: expected a JSON object; got {type(rec).__name__}")
                out.append((f"{path.name} line {n}", rec))
                columns.update(dict.fromkeys(rec))
        return out, list(columns)


def _plain(v: Any) -> Any:
    """A parquet value as plain Python: numpy scalars unwrapped, NaN/None as missing."""
    v = v.item() if hasattr(v, "item") and not isinstance(v, (str, bytes)) else v
    return None if isinstance(v, float) and math.isnan(v) else v


def _check_columns(path: Path, columns: Iterable[str]) -> set[str]:
    """The columns evalkit reads; a near-miss of one is an error, any other unknown column a warning."""
    unknown = [c for c in columns if c not in COLUMNS]
    for c in unknown:
        close = difflib.get_close_matches(str(c).lower(), list(COLUMNS), n=1, cutoff=0.75)
        if close:
            raise TableError(
                str(path), f"unknown column {c!r}; did you mean {close[0]!r}? (known: {', '.join(COLUMNS)})"
            )
    if unknown:
        warnings.warn(
            f"{path}: columns not read by evalkit: {_listed(unknown)} (it reads {', '.join(COLUMNS)})", stacklevel=2
        )
    return {c for c in columns if c in COLUMNS}


def _row(rec: dict[str, Any], where: str, base: Path, known: set[str]) -> ImageRow:
    values: dict[str, Any] = {}
    for col in known:
        v = rec.get(col)
        if v is None or (isinstance(v, str) and not v.strip() and col != "prompt") or v == "":
            continue
        values["label" if col == "class" else col] = _value(col, v, where)
    if "path" not in values:
        raise TableError(f"{where}, column 'path'", "empty; every row names its image file")
    p = Path(str(values.pop("path"))).expanduser()
    return ImageRow(path=p if p.is_absolute() else base / p, where=where, **values)


def _value(col: str, v: Any, where: str) -> Any:
    """One manifest value, checked and converted; a bad one is an error naming the row and the column."""
    if col in ("path", "prompt"):
        if not isinstance(v, str):
            raise TableError(f"{where}, column {col!r}", f"expected text; got {v!r}")
        return v
    if col in _LABELS:
        return plain_label(f"{where}, column {col!r}", v)
    if col in _INTS:
        n = _integer(v)
        if n is None or n < _INTS[col]:
            raise TableError(f"{where}, column {col!r}", f"expected an integer ≥ {_INTS[col]}; got {v!r}")
        return n
    try:
        x = float(v) if not isinstance(v, bool) else math.nan
    except (TypeError, ValueError):
        x = math.nan
    if not math.isfinite(x) or x < 0:
        raise TableError(f"{where}, column {col!r}", f"expected a finite number ≥ 0; got {v!r}")
    return x


def _integer(v: Any) -> int | None:
    """An integer from a manifest value, exactly (seeds go past 2**53): 30, "30", 30.0; None if it is none."""
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and re.fullmatch(r"\s*[+-]?\d+\s*", v):
        return int(v)
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return int(x) if math.isfinite(x) and x == int(x) else None


def plain_label(where: str, v: Any) -> str:
    """A model or sampler name from a manifest or a folder name: it becomes part of cell ids and folder names."""
    if not isinstance(v, str) or not v.strip() or v != v.strip() or any(c in v for c in "/\\\0") or len(v) > 100:
        raise TableError(
            where, f"expected a plain name (no '/', '\\', surrounding spaces; ≤ 100 characters); got {v!r}"
        )
    return v


def _check_files(source: Path, rows: list[ImageRow]) -> None:
    missing = [r for r in rows if not r.path.is_file()]
    if missing:
        named = ", ".join(f"{r.path} ({r.where})" for r in missing[:SHOWN])
        more = f" and {len(missing) - SHOWN} more" if len(missing) > SHOWN else ""
        raise TableError(str(source), f"{len(missing)} image file(s) do not exist: {named}{more}")


def _check_complete(source: Path, rows: list[ImageRow], known: set[str]) -> None:
    """A grid column, ``index`` or ``seed`` given on some rows only: which cell, or which sample, would be a guess."""
    for col in (*GRID, "index", "seed"):
        if col in known:
            empty = [r.where for r in rows if getattr(r, col) is None]
            if empty:
                raise TableError(
                    str(source),
                    f"column {col!r} is empty on {len(empty)} row(s) ({_listed(empty)}): give every row one, "
                    "or drop the column",
                )


# -- folders -----------------------------------------------------------------------------------------------------
def _read_folder(root: Path, field_: str) -> ImageTable:
    if not root.is_dir():
        raise TableError(field_, f"no such folder: {root}")
    files = [
        p for p in root.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.relative_to(root).parts)
    ]
    images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        raise TableError(field_, f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
    misplaced = [p.relative_to(root).as_posix() for p in images if len(p.relative_to(root).parts) != 5]
    if misplaced:
        raise TableError(
            field_,
            f"expected every image at <model>/<sampler>/<steps>/<guidance>/<file> under {root} (e.g. "
            f"sdxl/euler/30/7.5/0001.png); {len(misplaced)} are not: {_listed(misplaced)}",
        )
    rows = [_folder_row(root, p) for p in sorted(images, key=lambda p: natural_key(p.relative_to(root).as_posix()))]
    return ImageTable(root, "folder", rows, ("path", *GRID))


def _folder_row(root: Path, p: Path) -> ImageRow:
    rel = p.relative_to(root).as_posix()
    model, sampler, steps, guidance, _ = rel.split("/")
    return ImageRow(
        path=p,
        where=rel,
        model=plain_label(f"{rel}: model folder", model),
        sampler=plain_label(f"{rel}: sampler folder", sampler),
        steps=_value("steps", steps, f"{rel}: steps folder"),
        guidance=_value("guidance", guidance, f"{rel}: guidance folder"),
    )


def natural_key(name: str) -> list[Any]:
    """``img2`` before ``img10``: digit runs compare as numbers."""
    return [(0, int(t), t) if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name) if t]


# -- messages ----------------------------------------------------------------------------------------------------
def _listed(items: Iterable[Any], n: int = SHOWN) -> str:
    items = list(items)
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(str(i) for i in items[:n]) + more


def _cell_text(key: Any) -> str:
    sampler, steps, guidance = key
    return (
        f"sampler {sampler}, steps {steps}, guidance {guidance:g}"
        if guidance is not None
        else f"sampler {sampler}, steps {steps}"
    )
