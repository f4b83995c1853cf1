"""The results export (``results.parquet``, ``results.csv``): written stamped, verified on reading.

The export is a convenience for users (pandas, spreadsheets); results are always derived from the cells'
checksummed ``rows.json`` (:mod:`evalkit.store.reader`). It holds every finished cell of every config run into
the folder (run.json ``configs``; each row carries the ``config_hash`` that made it), and the runner rewrites it
after each cell, so a killed run leaves the table of what finished. So that nobody — a report, a gate, a
person — is misled by a stale or edited export, it carries where it came from:

- a *stamp*: the run's config hash and the sha256 of the ``rows.json`` of every cell it was made from, in
  the parquet's schema metadata (key ``evalkit``) and in the sidecar ``results.stamp.json``;
- the sidecar also holds the sha256 of ``results.parquet`` and ``results.csv`` as written, and is written
  last (each file atomically), so an edit or a writer killed between files shows as a mismatch.

:func:`export_problems` says every way the export disagrees with run.json and the cells: changed since it
was written, made from another config or other cells, or simply holding other values than the cells'.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from evalkit.store.files import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file

FORMAT = "evalkit-results/1"
PARQUET, CSV, STAMP = "results.parquet", "results.csv", "results.stamp.json"
META_KEY = b"evalkit"
KEY = ["cell_id", "metric", "extractor"]
SHOWN = 3  # differences named per message


class _Store(Protocol):  # RunStore, without importing it (folder.py imports this module)
    root: Path

    def read_manifest(self) -> dict[str, Any] | None: ...
    def read_cell(self, cell_id: str) -> dict[str, Any] | None: ...


# -- writing ----------------------------------------------------------------------------------------
def make_stamp(config_hash: str, rows_sha256: dict[str, str]) -> dict[str, Any]:
    """What an export was made from: the config hash and ``{cell_id: sha256 of its rows.json}``."""
    return {"format": FORMAT, "config_hash": str(config_hash or ""), "cells": dict(sorted(rows_sha256.items()))}


def stamp_of(store: _Store, df: pd.DataFrame) -> dict[str, Any]:
    """The stamp of ``df`` (rows of finished cells) in ``store``: run.json's config hash, each cell's rows sha."""
    manifest = store.read_manifest() or {}
    ids = sorted({str(c) for c in df["cell_id"].dropna() if str(c)}) if "cell_id" in df.columns else []
    shas = {c: str(((store.read_cell(c) or {}).get("files") or {}).get("rows.json", "")) for c in ids}
    return make_stamp(manifest.get("config_hash", ""), shas)


def write_export(store: _Store, df: pd.DataFrame) -> None:
    """results.parquet (stamp in its schema metadata), results.csv, then results.stamp.json with both sha256."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    stamp = stamp_of(store, df)
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {**(table.schema.metadata or {}), META_KEY: json.dumps(stamp, sort_keys=True).encode()}
    sink = io.BytesIO()
    pq.write_table(table.replace_schema_metadata(meta), sink)
    parquet, csv = sink.getvalue(), df.to_csv(index=False).encode()
    atomic_write_bytes(store.root / PARQUET, parquet)
    atomic_write_bytes(store.root / CSV, csv)
    atomic_write_json(store.root / STAMP, {**stamp, "files": {PARQUET: sha256_bytes(parquet), CSV: sha256_bytes(csv)}})


# -- reading ----------------------------------------------------------------------------------------
def export_files(root: Path) -> list[str]:
    return [name for name in (PARQUET, CSV) if (root / name).is_file()]


def read_export(root: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(root / name) if name == PARQUET else pd.read_csv(root / name)


def _parquet_stamp(path: Path) -> dict[str, Any] | None:
    import pyarrow.parquet as pq

    try:
        raw = (pq.read_schema(path).metadata or {}).get(META_KEY)
        stamp = json.loads(raw) if raw else None
    except (OSError, ValueError, TypeError):  # not a parquet file at all: the content check says so
        return None
    return stamp if isinstance(stamp, dict) else None


def _sidecar(root: Path, problems: list[str]) -> dict[str, Any] | None:
    path = root / STAMP
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        problems.append(f"{path} is unreadable ({e})")
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        problems.append(f"{path} is not an evalkit results stamp")
        return None
    return doc


def export_problems(
    root: Path,
    *,
    config_hash: str | None,
    rows_sha256: dict[str, str] | None,
    derived: pd.DataFrame | None,
    exported: dict[str, pd.DataFrame | Exception] | None = None,
) -> list[str]:
    """Every way the export in ``root`` disagrees with run.json (``config_hash``), the finished cells
    (``rows_sha256``) and the rows derived from them (``derived``, normalised); ``exported`` holds the
    export's frames, normalised the same way, or the error reading one. None skips a comparison."""
    names = export_files(root)
    if not names:
        return []
    problems: list[str] = []
    side = _sidecar(root, problems)
    for name in names:
        want = ((side or {}).get("files") or {}).get(name)
        if want and sha256_file(root / name) != want:
            problems.append(f"{root / name} was changed after evalkit wrote it (its sha256 is not the one in {STAMP})")
    stamp = (_parquet_stamp(root / PARQUET) if PARQUET in names else None) or side
    if stamp:
        problems += _stamp_problems(root, stamp, config_hash, rows_sha256)
    for name, frame in (exported or {}).items():
        if isinstance(frame, Exception):
            problems.append(f"{root / name} is unreadable ({type(frame).__name__}: {frame})")
        elif derived is not None:
            problems += frame_differences(root / name, frame, derived)
    return problems


def _stamp_problems(
    root: Path, stamp: dict[str, Any], config_hash: str | None, rows_sha256: dict[str, str] | None
) -> list[str]:
    problems = []
    made = str(stamp.get("config_hash") or "")
    if config_hash and made and made != config_hash:
        problems.append(
            f"{root / PARQUET} was made by config {made}, but run.json is config {config_hash} "
            "(a stale export: another suite was run into this folder since)"
        )
    cells = stamp.get("cells")
    if rows_sha256 is not None and isinstance(cells, dict) and cells != rows_sha256:
        other = sorted(c for c in set(cells) | set(rows_sha256) if cells.get(c) != rows_sha256.get(c))
        problems.append(
            f"{root / PARQUET} was made from other cells than the run's finished ones: "
            + ", ".join(other[:SHOWN])
            + (f" and {len(other) - SHOWN} more" if len(other) > SHOWN else "")
            + " (a stale export)"
        )
    return problems


def _values(df: pd.DataFrame) -> dict[tuple[str, str, str], list[float]]:
    out: dict[tuple[str, str, str], list[float]] = {}
    for cell, metric, extractor, value in df[[*KEY, "value"]].itertuples(index=False):
        out.setdefault((str(cell), str(metric), str(extractor)), []).append(float(value))
    return {k: sorted(v, key=lambda x: (math.isnan(x), x)) for k, v in out.items()}


def _same(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(
        (math.isnan(x) and math.isnan(y)) or x == y or abs(x - y) <= 1e-12 * max(abs(x), abs(y)) for x, y in zip(a, b)
    )


def frame_differences(path: Path, exported: pd.DataFrame, derived: pd.DataFrame) -> list[str]:
    """The export's values against the cells' (both normalised frames): one message naming the file, or []."""
    have, want = _values(exported), _values(derived)
    changed = [k for k in sorted(set(have) & set(want)) if not _same(have[k], want[k])]
    extra = sorted({k[0] for k in set(have) - set(want)})
    lost = sorted({k[0] for k in set(want) - set(have)})
    if not (changed or extra or lost):
        return []
    parts = [
        f"{m} of {c or '?'}{f' [{x}]' if x else ''} is {_show(have[(c, m, x)])} there, {_show(want[(c, m, x)])} "
        "in the cell's rows.json"
        for c, m, x in changed[:SHOWN]
    ]
    if len(changed) > SHOWN:
        parts.append(f"{len(changed) - SHOWN} more values differ")
    if extra:
        parts.append("rows of cells the run does not have as finished: " + ", ".join(c or "?" for c in extra[:SHOWN]))
    if lost:
        parts.append("no rows of finished cells " + ", ".join(lost[:SHOWN]))
    return [f"{path} disagrees with the cells (edited or stale): " + "; ".join(parts)]


def _show(values: list[float]) -> str:
    return ", ".join(format(v, ".6g") for v in values)
