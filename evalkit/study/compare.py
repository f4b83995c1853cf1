"""Comparisons between cells: the difference of a metric with a bootstrap CI, and a verdict that says
``better``/``worse`` only when that CI excludes 0 (``tie`` otherwise).

Cells are compared only at equal N (pairs across N get no row: a smaller N has a larger bias and noise)
and only where the measurement is the same (metric row, extractor, its weights and mode, and, for metrics
that read a reference, the reference's fingerprint). The CI, in order of preference (column ``basis``):

- ``paired bootstrap``: both cells share seed, N and conditions (sample i has the same noise and condition
  in both), so both are resampled with the same index rows and the shared variation cancels;
- ``unpaired bootstrap``: equal N but another seed or other conditions: the replicate difference of
  independently drawn resamples (where both runs have one seed, the second arm is resampled with its own
  index rows: :meth:`~evalkit.study.arms.Arms.pair`);
- ``separate CIs``: no replicates (no stored features, reference features not found): the rows' own CIs; a
  difference is claimed only when they do not overlap (conservative). ``ci_low``/``ci_high`` then bound
  the difference by the CIs' far ends;
- ``no CI``: neither; always ``tie``. ``note`` says why.

Each cell's replicates are computed once (:class:`~evalkit.study.arms.Arms`, cached on disk), with the same
resample indices for every cell of one (N, seed) (plus, for a cell in an unpaired pair of one seed, one set on
its own indices), and every pair's difference is taken from them: the cost grows with cells, not pairs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from evalkit.errors import StoreError
from evalkit.metrics.base import get_metric
from evalkit.metrics.resampling import percentile_interval
from evalkit.store import RunData, read_runs
from evalkit.study.arms import Arms
from evalkit.study.paired import difference_interval, pair_verdict, run_conditions
from evalkit.study.sources import RunSources, compares_with_source, is_task_run
from evalkit.study.task_cells import same_task, task_columns, task_fields
from evalkit.suite.tasks import row_extractor

DEFAULT_RESAMPLES = 200
PAIRED, UNPAIRED, SEPARATE, NO_CI = "paired bootstrap", "unpaired bootstrap", "separate CIs", "no CI"
CELL_FIELDS = ["model", "sampler", "steps", "guidance"]
PAIR_COLUMNS = [
    "metric",
    "extractor",
    "n",
    "run_a",
    "cell_a",
    *(f"{c}_a" for c in CELL_FIELDS),
    "run_b",
    "cell_b",
    *(f"{c}_b" for c in CELL_FIELDS),
    "value_a",
    "value_b",
    "diff",
    "ci_low",
    "ci_high",
    "confidence",
    "verdict",
    "basis",
    "note",
]
# a task suite's pairs also name each side's task and axis values, after its guidance (:mod:`.task_cells`)
TASK_PAIR_COLUMNS = [
    c
    for col in PAIR_COLUMNS
    for c in (
        [col, f"task_{col[-1]}", f"strength_{col[-1]}", f"controlnet_scale_{col[-1]}"]
        if col in ("guidance_a", "guidance_b")
        else [col]
    )
]
INTERVAL_COLUMNS = ["run_id", "cell_id", "metric", "extractor", "n", "value", "ci_low", "ci_high", "confidence", "note"]
Runs = RunData | str | os.PathLike | Sequence[RunData | str | os.PathLike]


def compare_cells(
    runs: Runs,
    metric: str | Iterable[str] | None = None,
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    pairs: str | Iterable[tuple[Any, Any]] = "all",
    reference: dict[str, dict[str, np.ndarray]] | None = None,
    cache_dir: str | Path | None = None,
) -> pd.DataFrame:
    """Every comparable pair of finished cells in ``runs``, one row per pair × metric row (:data:`PAIR_COLUMNS`).

    ``metric``: the result rows to compare (default: every quality row). ``pairs``: ``"all"`` (every two
    cells of equal N and, in a task suite, one task), ``"column"`` (only cells sharing steps, guidance and task
    point: task, strength, ControlNet scale) or explicit pairs of cell ids or
    ``(run_id, cell_id)`` tuples. ``reference``: the reference features (``{extractor: {output: array}}``) for
    metrics that read one; by default they are looked up in the reference feature cache (``cache_dir``, else
    the default) by what run.json recorded. ``diff`` is ``value_a − value_b``; ``verdict`` is cell a's:
    ``better``, ``worse`` or ``tie``. Pairs of task cells also name each side's task, strength and ControlNet
    scale (:data:`TASK_PAIR_COLUMNS`)."""
    opts = {"confidence": confidence, "n_resamples": n_resamples, "reference": reference, "cache_dir": cache_dir}
    return _study(runs, metric, pairs=pairs, intervals=False, **opts)[0]


def compare_with_intervals(
    runs: Runs,
    metric: str | Iterable[str] | None = None,
    *,
    confidence: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    pairs: str | Iterable[tuple[Any, Any]] = "all",
    reference: dict[str, dict[str, np.ndarray]] | None = None,
    cache_dir: str | Path | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`compare_cells` and, from the same replicates, each cell's own percentile CI of every compared row
    (:data:`INTERVAL_COLUMNS`; recentred on the value; NaN where the cell has no replicates, ``note`` says why)."""
    opts = {"confidence": confidence, "n_resamples": n_resamples, "reference": reference, "cache_dir": cache_dir}
    return _study(runs, metric, pairs=pairs, intervals=True, **opts)


def _study(
    runs: Runs,
    metric: str | Iterable[str] | None,
    *,
    confidence: float,
    n_resamples: int,
    pairs: str | Iterable[tuple[Any, Any]],
    reference: dict[str, dict[str, np.ndarray]] | None,
    cache_dir: str | Path | None,
    intervals: bool,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not 0.0 < float(confidence) < 1.0 or int(n_resamples) < 1:
        raise ValueError(f"confidence must lie in (0, 1) and n_resamples be ≥ 1; got {confidence}, {n_resamples}")
    runs = read_runs([runs] if isinstance(runs, (RunData, str, os.PathLike)) else runs)
    rows = quality_rows(runs, metric)
    if rows.empty:
        return pd.DataFrame(columns=PAIR_COLUMNS), pd.DataFrame(columns=INTERVAL_COLUMNS)
    arms = Arms(runs, rows, int(n_resamples), reference, cache_dir)
    out = []
    # one measurement: the same row, features, N and partner set; and one task (another task reads other inputs)
    keys = ["metric", "extractor", "weights_id", "mode", "n", "reference", *task_columns(rows.columns)[:1]]
    for _, group in rows.groupby(keys, sort=False, dropna=False):
        for a, b in _pairs(group.to_dict("records"), pairs):
            out.append(_compare(a, b, arms, float(confidence)))
    own = []
    for rec in rows.to_dict("records") if intervals else []:
        reps, why = arms.get(rec)
        ci = percentile_interval(reps, confidence, recentre_on=rec["value"]) if reps is not None else (math.nan,) * 2
        keep = {k: rec[k] for k in ("run_id", "cell_id", "metric", "extractor", "n", "value")}
        own.append(keep | {"ci_low": ci[0], "ci_high": ci[1], "confidence": confidence, "note": why})
    return pd.DataFrame(out, columns=pair_columns(rows.columns)), pd.DataFrame(own, columns=INTERVAL_COLUMNS)


def pair_columns(columns: Iterable[str]) -> list[str]:
    """The columns of pair rows between cells with these result columns: :data:`TASK_PAIR_COLUMNS` where they
    hold task cells, else :data:`PAIR_COLUMNS` (a suite without tasks: as before tasks existed)."""
    return TASK_PAIR_COLUMNS if task_columns(columns) else PAIR_COLUMNS


# -- what is compared -------------------------------------------------------------------------------
def quality_rows(runs: list[RunData], metric: str | Iterable[str] | None = None) -> pd.DataFrame:
    """The quality result rows of finished cells, with their direction (``hib``), the metric spec that made
    them (``spec``: index into the run's config metrics, -1 when unknown), the pairing key and ``reference``: what
    the row was measured against (the reference's fingerprint; in a task run, for a metric compared with each
    sample's source, the sources' fingerprint; "" for neither)."""
    wanted = None if metric is None else {metric} if isinstance(metric, str) else set(metric)
    frames = []
    for i, run in enumerate(runs):
        df = run.results
        if df.empty:
            continue
        specs = _row_specs(run)
        df = df[df["cell_id"].astype(str) != ""].copy()
        found = [specs.get((m, str(x)), specs.get((m, ""))) for m, x in zip(df["metric"], df["extractor"])]
        df["spec"] = [s[0] if s else -1 for s in found]
        df["hib"] = [s[1] if s else None for s in found]
        fingerprint = str((run.manifest.get("reference") or {}).get("fingerprint") or "")
        sources = _sources_fingerprint(run) if is_task_run(run) else ""
        df["reference"] = [sources if s and s[3] else fingerprint if s and s[2] else "" for s in found]
        df = df[df["hib"].notna() & df["value"].notna() & df["n"].notna()].copy()
        if wanted is not None:
            df = df[df["metric"].isin(wanted)].copy()
        df["run"] = i
        df["pair_key"] = _pairing_key(run, sources)
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    out["n"] = out["n"].astype(int)
    return out


def _row_specs(run: RunData) -> dict[tuple[str, str], tuple[int, bool, bool, bool]]:
    """(row, extractor) → (index of its metric spec in run.json's config, higher is better, needs a reference,
    compared with each sample's source: a source-reading metric of a task run)."""
    config = run.manifest.get("config") if isinstance(run.manifest.get("config"), dict) else {}
    task = is_task_run(run)
    out: dict[tuple[str, str], tuple[int, bool, bool, bool]] = {}
    for j, spec in enumerate(config.get("metrics") or []):
        if spec.get("name") == "throughput":
            continue
        try:
            defn = get_metric(spec["name"])
        except KeyError:  # a plugin metric not installed here: its rows cannot be judged
            continue
        for row, higher in defn.higher_is_better.items():
            source = compares_with_source(defn, task)
            key = (row, row_extractor(spec.get("extractor"), spec.get("options")))  # a region's rows: ex@region
            out[key] = (j, bool(higher), defn.needs_reference, source)
    if not out:  # results exported alone: directions from the registry, no spec (no replicates)
        from evalkit.metrics.base import available_metrics

        for name in available_metrics():
            defn = get_metric(name)
            for row, higher in defn.higher_is_better.items():
                out.setdefault((row, ""), (-1, bool(higher), defn.needs_reference, compares_with_source(defn, task)))
    return out


def _pairing_key(run: RunData, sources: str | None = None) -> str:
    """Seed, N and a digest of the per-sample conditions (in a task run, its sources too: ``sources``, from
    :func:`_sources_fingerprint` where the caller has it): equal keys mean sample i is the same draw."""
    try:
        labels, prompts = run_conditions(run)
        n, seed = run.n, run.seed
    except (StoreError, KeyError, ValueError, TypeError):
        return f"run:{run.root}"  # nothing says which samples these are: pairs only with itself
    if sources is None:
        sources = _sources_fingerprint(run) if is_task_run(run) else ""
    h = hashlib.sha256(json.dumps([n, seed, prompts]).encode())
    if labels is not None:
        h.update(np.ascontiguousarray(np.asarray(labels, dtype=np.int64)).tobytes())
    if sources:
        h.update(sources.encode())
    return h.hexdigest()[:16]


def _sources_fingerprint(run: RunData) -> str:
    """What a task run's source-compared rows were measured against; a run whose sources cannot be read is
    compared only with itself."""
    try:
        return f"sources:{RunSources(run).fingerprint}"
    except (StoreError, OSError, KeyError, ValueError):
        return f"sources:run:{run.root}"


def _pairs(recs: list[dict[str, Any]], pairs: str | Iterable[tuple[Any, Any]]) -> Iterable[tuple[dict, dict]]:
    if pairs == "all":
        return itertools.combinations(recs, 2)
    if pairs == "column":
        return (
            (a, b)
            for a, b in itertools.combinations(recs, 2)
            if a["steps"] == b["steps"] and a["guidance"] == b["guidance"] and same_task(a, b)
        )
    if isinstance(pairs, str):
        raise ValueError(f"pairs must be 'all', 'column' or pairs of cell ids; got {pairs!r}")
    wanted = [(_cell_key(a), _cell_key(b)) for a, b in pairs]

    def match(key: tuple[str | None, str], rec: dict[str, Any]) -> bool:
        return key[1] == rec["cell_id"] and key[0] in (None, rec["run_id"])

    return ((a, b) for ka, kb in wanted for a in recs for b in recs if match(ka, a) and match(kb, b) and a is not b)


def _cell_key(key: Any) -> tuple[str | None, str]:
    return (str(key[0]), str(key[1])) if isinstance(key, tuple) else (None, str(key))


# -- the comparison ---------------------------------------------------------------------------------
def _compare(a: dict[str, Any], b: dict[str, Any], arms: Arms, confidence: float) -> dict[str, Any]:
    diff = float(a["value"]) - float(b["value"])
    (ra, why_a), (rb, why_b) = arms.pair(a, b)
    note = why_a or why_b
    if ra is not None and rb is not None:
        ci = difference_interval(ra, rb, diff, confidence)
        basis, note = (PAIRED if a["pair_key"] == b["pair_key"] else UNPAIRED), ""
    elif all(_finite(r[k]) for r in (a, b) for k in ("ci_low", "ci_high")):
        ci, basis = (float(a["ci_low"]) - float(b["ci_high"]), float(a["ci_high"]) - float(b["ci_low"])), SEPARATE
    else:
        ci, basis = (math.nan, math.nan), NO_CI
    out: dict[str, Any] = {"metric": a["metric"], "extractor": a["extractor"], "n": int(a["n"])}
    for side, rec in (("a", a), ("b", b)):
        out.update({f"run_{side}": rec["run_id"], f"cell_{side}": rec["cell_id"], f"value_{side}": float(rec["value"])})
        out.update({f"{c}_{side}": rec[c] for c in CELL_FIELDS})
        out.update({f"{c}_{side}": v for c, v in task_fields(rec).items()})
    out.update(diff=diff, ci_low=ci[0], ci_high=ci[1], confidence=confidence, basis=basis, note=note)
    out["verdict"] = pair_verdict(ci, higher_is_better=bool(a["hib"]))
    return out


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def fill_intervals(df: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """Result rows with the bootstrap CI of :func:`compare_with_intervals` where the metric stored none."""
    if intervals.empty or df.empty:
        return df
    keys = ["run_id", "cell_id", "metric", "extractor"]
    found = intervals.dropna(subset=["ci_low", "ci_high"]).drop_duplicates(keys).set_index(keys)
    at = pd.MultiIndex.from_frame(df[keys].astype(str))
    out, missing = df.copy(), df["ci_low"].isna() | df["ci_high"].isna()
    for col in ("ci_low", "ci_high"):
        out[col] = df[col].where(~missing, pd.Series(found[col].reindex(at).to_numpy(), index=df.index))
    return out
