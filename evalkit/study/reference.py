"""The reference features of a finished run, for comparisons made after it (summary, report).

A run folder stores per-cell features but not the reference's (they can be 400 MB). The runner computed
them through the reference feature cache (:mod:`evalkit.references.cache`), so they are found there: an
entry whose recorded fingerprint, extractor, weights id and mode equal what run.json recorded, checksum
verified, with as many rows as run.json says the reference had. Nothing is recomputed here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.store import RunData, load_npz_checked, safe_component


def cached_reference_features(
    run: RunData, cache_dir: str | Path | None = None, *, split: str = "reference"
) -> tuple[dict[str, dict[str, np.ndarray]], str]:
    """(``{extractor: {output: array}}`` found for the run's extractors, why any is missing ("" when none is)).
    ``split="train"``: the training split's (run.json's ``reference.train``), cached by the run in the same way."""
    ref = run.manifest.get("reference") or {}
    if split == "train":
        ref = ref.get("train") or {}
        if not ref:
            return {}, "run.json records no training split (reference.train)"
    extractors = run.manifest.get("extractors") or {}
    if not ref.get("fingerprint") or not ref.get("name"):
        return {}, "run.json records no reference fingerprint"
    if cache_dir is None:
        from evalkit.references.cache import default_cache_dir  # imports torch: only when asked for

        cache_dir = default_cache_dir()
    folder = Path(cache_dir)
    found: dict[str, dict[str, np.ndarray]] = {}
    for ex, info in extractors.items():
        want = {"fingerprint": ref["fingerprint"], "extractor": ex}
        want |= {k: info.get(k) for k in ("weights_id", "mode")}
        pattern = f"{safe_component(ref['name'])}--{safe_component(ex)}--*.npz"
        for path in sorted((folder / "reference-features").glob(pattern)):
            arrays = _entry(path, want, ref.get("n"))
            if arrays is not None:
                found[ex] = arrays
                break
    missing = sorted(set(extractors) - set(found))
    why = (
        f"reference features of {', '.join(missing)} for {ref['name']} are not in the feature cache {folder}"
        if missing
        else ""
    )
    return found, why


def _entry(path: Path, want: dict[str, Any], n: Any) -> dict[str, np.ndarray] | None:
    """The arrays of one cache entry if it is intact and recorded for ``want`` (and ``n`` rows), else None."""
    try:
        digest = path.with_suffix(".npz.sha256").read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    arrays = load_npz_checked(path, digest) if len(digest) == 64 else None
    if arrays is None:
        return None
    try:
        meta = json.loads(str(arrays.pop("__meta__")))
    except (KeyError, ValueError):
        return None
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in want.items()):
        return None
    rows = {len(a) for a in arrays.values() if getattr(a, "ndim", 0) >= 1}
    if len(rows) != 1 or (n is not None and rows != {int(n)}):
        return None
    return arrays
