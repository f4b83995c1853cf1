"""Noise floors: what a distribution metric reads when the "generated" samples are real ones.

FD, KID, precision/recall and the like are not 0 for a perfect model at finite N: N real samples scored
against the rest of the reference give a floor that no sampler can beat at this N (MNIST digits give FD
15–27 at N = 200 on mnist-net features). A cell within that floor is as good as this N can tell.

Method (:func:`noise_floors`): with M reference samples and a shuffle seeded by the run's seed, draw ``k =
min(draws, M // N)`` disjoint sets of N reference samples; score each set as the generated samples against
the other M − N reference samples, with the suite's metric options and seed. Rows: median, range (min–max)
and every draw. A reference of M ≤ N samples has no floor (the reason says so); a paired metric
(``lpips_paired``: sample i against reference i) has no distribution floor, nor, in a task suite, a metric that
compares each sample with its own source (psnr, ssim, lpips_paired: :mod:`evalkit.study.sources`). Results are
cached as JSON in ``<cache_dir>/noise-floors/``, keyed by the reference (fingerprint and a digest of its features), the
extractor weights, the metric spec, N, the seed and ``draws``.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evalkit.metrics.base import MetricInputs, get_metric
from evalkit.metrics.threads import single_thread_blas_when_oversubscribed
from evalkit.store import atomic_write_json, read_runs
from evalkit.study.cells import split_key

FORMAT = "evalkit-floors/1"
METHOD = (
    "real vs real: N reference samples scored as the generated set against the other M − N reference samples, "
    "over disjoint seeded draws; median and range over the draws"
)
DEFAULT_DRAWS = 5
PAIRED_METRICS = {"lpips_paired"}  # sample i against reference i: no distribution floor
FLOOR_OPTIONS: dict[str, dict[str, Any]] = {"fd": {"bootstrap": 0}}  # the value only; its own CI is not needed
FLOOR_COLUMNS = [
    "run_id",
    "metric",
    "metric_def",
    "extractor",
    "n",
    "median",
    "low",
    "high",
    "draws",
    "n_ref",
    "available",
    "reason",
]


def _spec(s: Any) -> tuple[str, str | None, dict[str, Any]]:
    """(name, extractor, options) of a :class:`~evalkit.suite.MetricSpec` or of its config dict."""
    if isinstance(s, Mapping):
        return str(s["name"]), s.get("extractor"), dict(s.get("options") or {})
    return str(s.name), s.extractor, dict(s.options or {})


def noise_floors(
    metric_specs: Iterable[Any],
    ref_features: Mapping[str, Mapping[str, np.ndarray]] | None,
    n: int,
    *,
    seed: int,
    draws: int = DEFAULT_DRAWS,
    cache_dir: str | Path | None = None,
    key: Any = None,
) -> dict[str, Any]:
    """The real-vs-real floor of every metric that needs a reference, at ``n`` samples (module docstring).

    ``metric_specs``: the suite's metrics (specs or config dicts; others are skipped); ``ref_features``:
    ``{extractor: {output: (M, ...) array}}``; ``key``: what identifies the reference and the extractor weights
    (e.g. run.json's ``reference`` and ``extractors``), part of the cache key. Returns a JSON-able dict:
    format, method, n, seed, draws and ``rows`` (one per metric row: median, low, high, values, n_ref,
    available, reason)."""
    if int(n) < 1 or int(draws) < 1:
        raise ValueError(f"noise floors need n ≥ 1 and draws ≥ 1; got n={n}, draws={draws}")
    n, draws, feats = int(n), int(draws), dict(ref_features or {})
    specs = [s for s in map(_spec, metric_specs) if s[0] != "throughput" and _needs_reference(s[0])]
    doc: dict[str, Any] = {"format": FORMAT, "method": METHOD, "n": n, "seed": int(seed), "draws": draws, "rows": []}
    path = _cache_path(cache_dir, specs, feats, n, int(seed), draws, key)
    cached = _read_cache(path)
    if cached is not None:
        return cached
    with single_thread_blas_when_oversubscribed():
        for name, extractor, options in specs:
            doc["rows"] += _spec_floor(name, extractor, options, feats.get(str(extractor)), n, int(seed), draws)
    if path is not None:
        atomic_write_json(path, doc)
    return doc


def suite_floors(
    suite: Any,
    ref_features: Mapping[str, Mapping[str, np.ndarray]],
    reference: Any,
    extractors: Mapping[str, Any],
    cache_dir: Path,
) -> dict[str, Any]:
    """A run's floors: every metric of ``suite`` at its N and seed, keyed by the reference and extractor weights.
    The document carries ``reference`` (run.json's reference info, with its ``fingerprint``), so that a reader
    can tell floors of another reference from the run's own (:meth:`evalkit.store.RunData.floors`)."""
    ids = {name: {"weights_id": e.weights_id, "mode": e.mode} for name, e in extractors.items()}
    key = {"reference": reference, "extractors": ids}
    task = bool(getattr(suite, "task", None))
    # source-paired metrics, and any metric on a mask's region (crops vs the sources' crops): no real-vs-real floor
    source = [task and (_reads_source(_spec(s)[0]) or "region" in _spec(s)[2]) for s in suite.metrics]
    own = [s for s, src in zip(suite.metrics, source) if not src]
    doc = noise_floors(own, ref_features, suite.samples, seed=suite.seed, cache_dir=cache_dir, key=key)
    sourced = [s for s, src in zip(suite.metrics, source) if src]
    doc = {**doc, "rows": doc["rows"] + _source_rows(sourced, suite.samples)}
    return {**doc, "reference": reference}


def _reads_source(name: str) -> bool:
    try:
        defn = get_metric(name)
    except KeyError:
        return False
    return bool(defn.reads_source and defn.needs_reference)


def _source_rows(specs: list[Any], n: int) -> list[dict[str, Any]]:
    """No floor for the metrics of a task suite that compare each sample with its own source: the reference's
    real-vs-real draws would be scored against other reference images, another quantity."""
    rows = []
    for name, extractor, options in map(_spec, specs):
        why = f"in a task suite {name} compares each sample with its own source image: it has no real-vs-real floor"
        nan = math.nan
        shown = f"{extractor or ''}@{options['region']}" if "region" in options else str(extractor or "")  # its rows'
        base = {"metric_def": name, "extractor": shown, "n": int(n), "n_ref": 0, "draws": 0}
        rows += [
            {**base, "metric": row, "median": nan, "low": nan, "high": nan, "values": [], "available": False}
            | {"reason": why}
            for row in get_metric(name).higher_is_better
        ]
    return rows


def _needs_reference(name: str) -> bool:
    try:
        return bool(get_metric(name).needs_reference)
    except KeyError:  # a plugin metric that is not installed here: no floor, nothing to say
        return False


def _spec_floor(
    name: str,
    extractor: str | None,
    options: dict[str, Any],
    feats: Mapping[str, np.ndarray] | None,
    n: int,
    seed: int,
    draws: int,
) -> list[dict[str, Any]]:
    """The floor rows of one metric spec (one per row the metric produces)."""
    defn = get_metric(name)
    base = {"metric_def": name, "extractor": str(extractor or ""), "n": n, "n_ref": 0, "draws": 0}

    def unavailable(reason: str) -> list[dict[str, Any]]:
        nan = math.nan
        return [
            {**base, "metric": row, "median": nan, "low": nan, "high": nan, "values": [], "available": False}
            | {"reason": reason}
            for row in defn.higher_is_better
        ]

    if name in PAIRED_METRICS:
        return unavailable(f"{name} pairs sample i with reference i: it has no distribution floor")
    sizes = {len(a) for a in (feats or {}).values() if getattr(a, "ndim", 0) >= 1}
    if not feats or any(k.endswith((".mu", ".sigma")) for k in feats) or len(sizes) != 1:
        return unavailable(f"no per-sample reference features for extractor {extractor!r} (a stats-only reference?)")
    m = sizes.pop()
    if m <= n:
        return unavailable(f"the reference has {m} samples, not more than N={n}: none left to score a draw against")
    perm = np.random.default_rng(seed).permutation(m)
    values: dict[str, list[float]] = {}
    opts = {**options, **FLOOR_OPTIONS.get(name, {})}
    for d in range(min(draws, m // n)):
        take = np.zeros(m, dtype=bool)
        take[perm[d * n : (d + 1) * n]] = True
        inputs = MetricInputs(
            gen={k: a[take] for k, a in feats.items()},
            ref={k: a[~take] for k, a in feats.items()},
            seed=seed,
            options=opts,
        )
        try:
            out = defn.compute(inputs)
        except (ValueError, KeyError, np.linalg.LinAlgError) as e:
            return unavailable(f"{name} failed on real samples: {e}")
        for row, v in out.items():
            values.setdefault(row, []).append(float(v.value))
    return [
        {**base, "metric": row, "median": float(np.median(v)), "low": float(np.min(v)), "high": float(np.max(v))}
        | {"values": v, "draws": len(v), "n_ref": m - n, "available": True, "reason": ""}
        for row, v in values.items()
    ]


def _cache_path(
    cache_dir: str | Path | None,
    specs: list[tuple[str, str | None, dict[str, Any]]],
    feats: dict[str, Mapping[str, np.ndarray]],
    n: int,
    seed: int,
    draws: int,
    key: Any,
) -> Path | None:
    """The cache file of this floor; the features' own digest makes a stale ``key`` harmless."""
    if cache_dir is None:
        return None
    h = hashlib.sha256()
    for ex in sorted({str(s[1]) for s in specs}):
        for out, arr in sorted((feats.get(ex) or {}).items()):
            a = np.ascontiguousarray(arr)
            h.update(f"{ex}/{out}:{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
    ident = {
        "format": FORMAT,
        "specs": specs,
        "n": n,
        "seed": seed,
        "draws": draws,
        "key": key,
        "features": h.hexdigest(),
    }
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:32]
    return Path(cache_dir) / "noise-floors" / f"{digest}.json"


def _read_cache(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == FORMAT and isinstance(doc.get("rows"), list) else None


# -- reading and using floors -----------------------------------------------------------------------
def floors_frame(runs: Any) -> pd.DataFrame:
    """The stored floors of run folders (``RunData.floors()``) as one frame, a row per run × metric row."""
    frames = []
    for run in read_runs(runs if isinstance(runs, (list, tuple)) else [runs]):
        f = run.floors()
        if f is not None and not f.empty:
            frames.append(f.assign(run_id=run.run_id))
    if not frames:
        return pd.DataFrame(columns=FLOOR_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    out = out[[c for c in FLOOR_COLUMNS if c in out.columns]]
    out.attrs["method"] = METHOD
    return out


def floor_for(floors: pd.DataFrame | None, metric: str, n: Any, run_id: str | None = None) -> pd.Series | None:
    """The available floor of metric column ``metric`` (a row name, or ``<row>@<extractor>``: see
    :func:`evalkit.study.cells.split_key`) at N = ``n``, or None. With ``run_id``, only that run's floor (a
    frame without a ``run_id`` column is one run's own). A bare row name measured on several extractors is
    ambiguous: None, never one extractor's floor for another's values."""
    if floors is None or floors.empty or n is None or pd.isna(n):
        return None
    row, extractor = split_key(metric)
    sub = floors[(floors["metric"] == row) & (floors["n"].astype(float) == float(n)) & floors["available"]]
    if run_id is not None and "run_id" in sub:
        sub = sub[sub["run_id"].astype(str) == str(run_id)]
    extractors = sub["extractor"].fillna("").astype(str) if "extractor" in sub else pd.Series("", index=sub.index)
    if extractor is not None:
        sub = sub[extractors == extractor]
    elif extractors.nunique() > 1:
        return None
    return None if sub.empty else sub.iloc[0]


def at_floor(value: float, ci_low: float, ci_high: float, floor: pd.Series | None, *, higher_is_better: bool) -> bool:
    """A cell is at the floor when it is not confidently worse than real samples: its CI overlaps the floor's
    range, or its value is better than the floor's worst draw. NaN CI bounds count as no CI (value only)."""
    if floor is None or not math.isfinite(value):
        return False
    bounds = [v for v in (value, ci_low, ci_high) if v is not None and math.isfinite(v)]
    if higher_is_better:  # the floor's worst draw is its lowest; the cell's most favourable bound its highest
        return max(bounds) >= float(floor["low"])
    return min(bounds) <= float(floor["high"])
