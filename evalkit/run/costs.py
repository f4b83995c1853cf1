"""A cell's cost, from its shards' timed batches (:mod:`evalkit.run.cell`): the throughput rows, where each value came
from (``cost_source``: measured, counted, reported or unknown), the cell record's ``timing`` block and its
seconds per phase. Reported seconds and costs (an adapter that does not generate here) replace the measured ones
where every sample has one (see :mod:`evalkit.run.cell`)."""

from __future__ import annotations

import math
import statistics
from typing import Any

from evalkit.run.cell import Shard
from evalkit.run.timing import reported_summary, spread
from evalkit.suite import TimingSpec

THROUGHPUT_ROWS = ("images_per_s", "s_per_image", "model_calls", "nfe", "ms_per_model_call", "peak_mem_mb")
COST_PER_IMAGE = "cost_per_image"  # a row only where the adapter reports a cost
TIMED_ROWS = ("images_per_s", "s_per_image", "ms_per_model_call")


def costs(shards: list[Shard]) -> dict[str, float]:
    """Cost values of a cell (:func:`cost_rows` adds their spreads). Measured: ``s_per_image`` is the median
    per-image seconds over the timed repeats of every rank (device-seconds per image); K ranks that each timed
    repeats make images K times as fast, so ``images_per_s`` = K / median; ``ms_per_model_call`` is the median of
    per-call milliseconds (the same repeats: one model call carries the whole batch). Reported for every sample:
    the median reported seconds, its reciprocal, and per reported model call. ``cost_per_image``: the mean reported
    cost, only where every sample has one. Unknown values are NaN."""
    calls, nfe = _known_max([s.model_calls for s in shards]), _known_max([s.nfe for s in shards])
    reported, measured = reported_values(shards, "reported_s"), all(s.measured for s in shards)
    nan = math.nan
    if reported is not None:
        median = spread(reported)["median"]
        rate, per_call_ms = (1 / median if median > 0 else nan), (1000 * median / calls if calls > 0 else nan)
    elif measured:
        per_image, per_call = _per_image(shards), _per_call(shards)
        median = spread(per_image)["median"]
        rate = sum(1 for s in shards if s.repeats) / median if per_image and median > 0 else nan
        per_call_ms = 1000 * spread(per_call)["median"] if per_call else nan
    else:
        median = rate = per_call_ms = nan
    out = {
        "model_calls": calls,
        "nfe": nfe,
        "images_per_s": rate,
        "s_per_image": median,
        "ms_per_model_call": per_call_ms,
        "peak_mem_mb": max(s.peak_mb for s in shards) if measured else nan,
    }
    cost = reported_values(shards, "reported_cost")
    if cost is not None:
        out[COST_PER_IMAGE] = statistics.fmean(cost)
    return out


def cost_rows(shards: list[Shard], cost: dict[str, float]) -> list[dict[str, Any]]:
    """The throughput rows (partial: metric, value, std, ci_low, ci_high, cost_source). For ``s_per_image`` and
    ``ms_per_model_call`` ``ci_low``/``ci_high`` are the *spread*, the fastest and slowest repeat (reported: image),
    not a confidence interval, and ``std`` their standard deviation; ``images_per_s`` has the reciprocal spread.
    All NaN with fewer than two repeats. ``cost_per_image`` (where reported): the mean, with the std of images."""
    nan = math.nan
    reported = reported_values(shards, "reported_s")
    if reported is not None:
        calls = cost["model_calls"]
        img, call, ranks = spread(reported), spread([x / calls for x in reported] if calls > 0 else []), 1
    elif all(s.measured for s in shards):
        img, call = spread(_per_image(shards)), spread(_per_call(shards))
        ranks = sum(1 for s in shards if s.repeats)
    else:
        img, call, ranks = spread([]), spread([]), 0
    extra = {
        "s_per_image": (img["std"], img["min"], img["max"]),
        "ms_per_model_call": (1000 * call["std"], 1000 * call["min"], 1000 * call["max"]),
        "images_per_s": (nan, ranks / img["max"], ranks / img["min"]),
    }
    sources = cost_sources(shards, cost)
    rows = []
    for name in THROUGHPUT_ROWS:
        std, lo, hi = extra.get(name, (nan, nan, nan))
        value = float(cost[name])
        rows.append(
            {"metric": name, "value": value, "std": std, "ci_low": lo, "ci_high": hi, "cost_source": sources[name]}
        )
    if COST_PER_IMAGE in cost:
        std = spread(reported_values(shards, "reported_cost") or [])["std"]
        rows.append(
            {
                "metric": COST_PER_IMAGE,
                "value": float(cost[COST_PER_IMAGE]),
                "std": std,
                "ci_low": nan,
                "ci_high": nan,
                "cost_source": "reported",
            }
        )
    return rows


def cost_sources(shards: list[Shard], cost: dict[str, float]) -> dict[str, str]:
    """Where each cost row's value came from: measured, counted, reported, or unknown (a NaN value)."""
    measured = all(s.measured for s in shards)
    timed = "reported" if reported_values(shards, "reported_s") is not None else "measured" if measured else ""
    counts = "counted" if measured else "reported"
    said = {**dict.fromkeys(TIMED_ROWS, timed), "model_calls": counts, "nfe": counts, "peak_mem_mb": "measured"}
    return {k: v if v and math.isfinite(float(cost[k])) else "unknown" for k, v in said.items()}


def reported_values(shards: list[Shard], attr: str) -> list[float] | None:
    """The per-sample values an adapter reported (``reported_s``, ``reported_cost``), when every sample has one."""
    values = [v for s in shards for v in getattr(s, attr)]
    complete = len(values) == sum(len(s.indices) for s in shards) and all(math.isfinite(v) for v in values)
    return values if values and complete else None


def timing_record(shards: list[Shard], timing: TimingSpec) -> dict[str, Any]:
    """The cell record's ``timing`` block: the repeats (per-image seconds), their median and spread, how they
    were taken (fixed batch, warm-ups, extra batches, threads) and the machine's load and hardware while they ran
    (rank 0's; the warnings of every rank, when the cell's seconds are measured ones); ``source`` (measured,
    reported or unknown) and, where an adapter reported seconds or costs, ``reported``: their summary."""
    per_image = _per_image(shards)
    summary = spread(per_image)
    machine = next((s.machine for s in shards if s.machine), {})
    source = cost_sources(shards, costs(shards))["s_per_image"]
    warnings = list(dict.fromkeys(w for s in shards for w in s.machine.get("warnings", [])))
    record = {
        "source": source,
        "repeats": per_image,
        "median_s_per_image": _or_none(summary["median"]),
        "spread_s_per_image": [_or_none(summary["min"]), _or_none(summary["max"])],
        "std_s_per_image": _or_none(summary["std"]),
        "repeats_requested": timing.repeats,
        "fixed_batch": max((r.images for s in shards for r in s.repeats), default=0),
        "warmup_batches": max((s.warmup_batches for s in shards), default=0),
        "extra_batches": sum(s.extra_batches for s in shards),
        "threads": timing.threads,
        **{k: v for k, v in machine.items() if k != "warnings"},
        "warnings": warnings if source == "measured" else [],
    }
    reported = _reported_record(shards)
    if reported:
        record["reported"] = reported
    return record


def _reported_record(shards: list[Shard]) -> dict[str, Any]:
    """Per reported quantity (seconds, cost per image): :func:`~evalkit.run.timing.reported_summary`."""
    n = sum(len(s.indices) for s in shards)
    out = {}
    for attr, key in (("reported_s", "s_per_image"), ("reported_cost", "cost_per_image")):
        summary = reported_summary([v for s in shards for v in getattr(s, attr)], n)
        if summary:
            out[key] = summary
    return out


def phase_seconds(shards: list[Shard], *, metrics_s: float, scoring_s: float) -> dict[str, float]:
    """The cell record's ``timings``: seconds per phase (the slowest rank's), ``timing_batches_s`` for the
    batches run for timing alone, ``total_s`` = the slowest rank's work + rank 0's scoring (``scoring_s``)."""
    return {
        "warmup_s": max(s.warmup_s for s in shards),
        "generate_s": max(s.generate_s for s in shards),
        "extract_s": max(s.extract_s for s in shards),
        "metrics_s": metrics_s,
        "timing_batches_s": max(s.extra_s for s in shards),
        "total_s": scoring_s + max(s.warmup_s + s.generate_s + s.extract_s + s.extra_s for s in shards),
    }


def _per_image(shards: list[Shard]) -> list[float]:
    return [r.seconds / r.images for s in shards for r in s.repeats if r.images]


def _per_call(shards: list[Shard]) -> list[float]:
    return [r.seconds / r.calls for s in shards for r in s.repeats if r.calls]


def _or_none(x: float) -> float | None:
    return None if math.isnan(x) else x


def _known_max(values: list[int | None]) -> float:
    """The largest count over shards, NaN when any shard's is unknown (a row value, never a guess)."""
    return math.nan if any(v is None for v in values) else max(values)  # type: ignore[type-var]
