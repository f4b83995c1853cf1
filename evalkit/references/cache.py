"""The reference feature cache: one pass over the images feeds every extractor; entries are keyed by
(fingerprint, extractor, weights_id, mode, resolution) and checksum-verified on read.

An entry also records the files that were skipped while it was computed (name, reason and which check
failed). The fingerprint covers every file that passes the header check, so a file whose pixels do not
decode is only found by decoding it; a cache hit decodes nothing, so the recorded list is replayed
instead: the same warning on every hit, ``len(ref)`` equal to the cached feature rows, and
``strict: true`` an error naming the files, exactly as on the run that computed the entry."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import ConfigError
from evalkit.references.sets import CACHE_FORMAT, ReferenceSet, ReferenceSetError
from evalkit.store import atomic_write_bytes, load_npz_checked, npz_bytes, safe_component, sha256_bytes


def default_cache_dir() -> Path:
    return Path(os.environ.get("EVALKIT_CACHE_DIR") or Path.home() / ".cache" / "evalkit")


def cache_key(ref: ReferenceSet, extractor: Any) -> dict[str, Any]:
    """What a cached entry depends on. Extractors may expose ``resolution`` (their input size)."""
    return {
        "format": CACHE_FORMAT,
        "fingerprint": ref.fingerprint,
        "extractor": extractor.name,
        "weights_id": extractor.weights_id,
        "mode": extractor.mode,
        "resolution": getattr(extractor, "resolution", None),
        "outputs": list(extractor.outputs),
    }


def cache_path(ref: ReferenceSet, extractor: Any, cache_dir: Path) -> Path:
    key = cache_key(ref, extractor)
    digest = sha256_bytes(json.dumps(key, sort_keys=True).encode())[:24]
    name = f"{safe_component(ref.name)}--{safe_component(extractor.name)}--{digest}.npz"
    return Path(cache_dir) / "reference-features" / name


def _load_cached(
    path: Path, expected: dict[str, Any] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """``(arrays, meta)`` if the entry matches its sha256 sidecar and (when given) its recorded key
    equals ``expected``; else None, with a warning when an entry exists but cannot be trusted."""
    sidecar = path.with_suffix(".npz.sha256")
    if not path.is_file() or not sidecar.is_file():
        return None
    try:
        digest = sidecar.read_text().strip()
    except (OSError, UnicodeDecodeError):
        digest = ""
    arrays = load_npz_checked(path, digest) if len(digest) == 64 else None
    if arrays is None:
        warnings.warn(f"reference feature cache {path} is corrupt; recomputing", stacklevel=3)
        return None
    meta_raw = arrays.pop("__meta__", None)
    try:
        meta = json.loads(str(meta_raw)) if meta_raw is not None else {}
    except json.JSONDecodeError:
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    if expected is not None:
        got = {k: meta.get(k) for k in expected}
        lengths = {len(v) for v in arrays.values() if getattr(v, "ndim", 0) >= 1}
        if (
            got != json.loads(json.dumps(expected))
            or not arrays
            or len(lengths) != 1
            or ("n" in meta and lengths != {meta["n"]})
        ):
            warnings.warn(
                f"reference feature cache {path} does not belong to this reference/extractor "
                "(its recorded key or sizes differ); recomputing",
                stacklevel=3,
            )
            return None
    return arrays, meta


def _recorded_undecodable(meta: dict[str, Any]) -> dict[str, str] | None:
    """The files an entry recorded as undecodable (name -> reason); None if the record is malformed."""
    entries = meta.get("skipped", [])
    if not isinstance(entries, list):
        return None
    out: dict[str, str] = {}
    for e in entries:
        if not isinstance(e, dict) or not isinstance(e.get("file"), str):
            return None
        if e.get("check") == "decode":
            out[e["file"]] = str(e.get("reason", ""))
    return out


def _skipped_record(ref: ReferenceSet) -> list[dict[str, str]]:
    """What an entry records about skipped files: header-check failures (found again by every scan) and
    decode failures (found only by decoding, so replayed from this record on a hit)."""
    header = getattr(ref, "unreadable", {}) or {}
    return [{"file": n, "check": "header", "reason": r} for n, r in header.items()] + [
        {"file": n, "check": "decode", "reason": r} for n, r in ref.undecodable.items()
    ]


def _store_cached(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    data = npz_bytes({**arrays, "__meta__": np.array(json.dumps(meta, sort_keys=True))})
    atomic_write_bytes(path, data)
    atomic_write_bytes(path.with_suffix(".npz.sha256"), (sha256_bytes(data) + "\n").encode())  # last: marks it valid


def reference_features(
    ref: ReferenceSet,
    extractors: Iterable[Any],
    *,
    cache_dir: Path | None = None,
    batch_size: int = 256,
    use_cache: bool = True,
) -> dict[str, dict[str, np.ndarray]]:
    """Features of ``ref`` for each extractor: ``{extractor name: {output name: (N, ...) array}}``.

    Cached entries are read (checksum-verified); the rest come from ONE pass over the images feeding
    every missing extractor, then are written atomically with a sha256 sidecar. A hit replays the files
    its entry recorded as undecodable (warning, or with ``strict`` an error naming them), so ``len(ref)``
    equals the feature rows whether or not the images were decoded this time. A statistics reference
    returns its ``<output>.mu``/``<output>.sigma`` for each extractor (after checking any recorded
    extractor, mode and weights id).
    """
    extractors = list(extractors)
    names = [e.name for e in extractors]
    if len(set(names)) != len(names):
        raise ConfigError(f"extractor names must be distinct, got {names}")
    if ref.stats is not None:
        return {e.name: _stats_for(ref, e) for e in extractors}

    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out, todo = _cache_hits(ref, extractors, cache_dir) if use_cache else ({}, extractors)
    if todo:
        out.update(_one_pass(ref, todo, cache_dir if use_cache else None, batch_size))
    return out


def _cache_hits(ref: ReferenceSet, extractors: list[Any], cache_dir: Path) -> tuple[dict[str, Any], list[Any]]:
    """(features of the extractors whose cache entries can be used, the extractors still to compute)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    todo = []
    hits: dict[str, tuple[Any, dict[str, np.ndarray], dict[str, str]]] = {}
    for e in extractors:
        path = cache_path(ref, e, cache_dir)
        loaded = _load_cached(path, cache_key(ref, e))
        recorded = _recorded_undecodable(loaded[1]) if loaded is not None else None
        if loaded is not None and recorded is None:
            warnings.warn(
                f"reference feature cache {path} has a malformed record of skipped files; recomputing", stacklevel=3
            )
        if loaded is not None and recorded is not None:
            hits[e.name] = (e, loaded[0], recorded)
        else:
            todo.append(e)
    if not hits:
        return out, todo
    # A hit decodes nothing: replay the undecodable files the entries recorded (strict -> error naming
    # them; else the warning, and len(ref) drops them), once for all entries of this reference.
    recorded = {}
    for _, _, rec in hits.values():
        recorded.update(rec)
    ref.restore_undecodable(recorded)
    for name, (e, arrays, _) in hits.items():
        rows = {len(v) for v in arrays.values() if getattr(v, "ndim", 0) >= 1}
        if rows != {len(ref)}:
            warnings.warn(
                f"reference feature cache {cache_path(ref, e, cache_dir)} holds {sorted(rows)} rows "
                f"but the reference has {len(ref)} decodable images; recomputing",
                stacklevel=3,
            )
            todo.append(e)
        else:
            out[name] = arrays
    return out, todo


def _one_pass(
    ref: ReferenceSet, extractors: list[Any], cache_dir: Path | None, batch_size: int
) -> dict[str, dict[str, np.ndarray]]:
    """ONE pass over the images feeding every extractor; each result cached (when ``cache_dir``) atomically."""
    parts: dict[str, dict[str, list[np.ndarray]]] = {e.name: {} for e in extractors}
    for batch in ref.iter_batches(batch_size):
        for e in extractors:
            for k, v in e(batch).items():
                parts[e.name].setdefault(k, []).append(np.asarray(v))
    out = {}
    for e in extractors:
        arrays = {k: np.concatenate(v) for k, v in parts[e.name].items()}
        if cache_dir is not None:
            meta = {**cache_key(ref, e), "reference": ref.name, "n": len(ref), "skipped": _skipped_record(ref)}
            _store_cached(cache_path(ref, e, cache_dir), arrays, meta)
        out[e.name] = arrays
    return out


def _stats_for(ref: ReferenceSet, extractor: Any) -> dict[str, np.ndarray]:
    meta = getattr(ref, "meta", {})
    for field in ("extractor", "mode", "weights_id"):
        want = {"extractor": extractor.name, "mode": extractor.mode, "weights_id": extractor.weights_id}[field]
        if field in meta and meta[field] != want:
            raise ReferenceSetError(
                f"reference statistics {ref.name!r} were computed with {field}={meta[field]!r}, "
                f"but the extractor has {field}={want!r}"
            )
    return dict(ref.stats or {})


def save_reference_stats(
    path: Path, features: np.ndarray, *, extractor: Any | None = None, output: str = "features"
) -> None:
    """Write ``mu``/``sigma`` (float64, ddof=1) of ``features`` as a stats reference file."""
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    arrays: dict[str, np.ndarray] = {
        f"{output}.mu" if output != "features" else "mu": x.mean(axis=0),
        f"{output}.sigma" if output != "features" else "sigma": np.cov(x, rowvar=False),
        "n": np.array(x.shape[0]),
    }
    if extractor is not None:
        arrays.update(
            extractor=np.array(extractor.name), mode=np.array(extractor.mode), weights_id=np.array(extractor.weights_id)
        )
    atomic_write_bytes(Path(path), npz_bytes(arrays))
