"""One cell's work: generate a shard of samples (streamed through every extractor) while timing its batches,
then on rank 0 join the shards and score them. Images are dropped after extraction; only per-sample features,
a few images and timings are kept.

Cost rows say where each value came from (``cost_source``): ``measured`` (evalkit's clock and memory),
``counted`` (model calls the adapter counted), ``reported`` (what an adapter that does not generate here states:
:attr:`GeneratedBatch.reported_seconds` and ``cost`` — the images adapter's manifest, the http adapter's request
latency and price — and the images adapter's model calls and NFE) or ``unknown`` (value NaN). Seconds reported
for every sample of a cell replace the measured ones in ``s_per_image`` (their median; ``ci_low``/``ci_high``
the fastest and slowest image), ``images_per_s`` and ``ms_per_model_call``; evalkit's own repeats stay in the
cell's ``timing`` block. A reported cost gives a ``cost_per_image`` row (the mean). An adapter whose class sets
``measures_cost = False`` (the images adapter: it reads files) gets no timing batches and no measured values."""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from evalkit.features.base import Extractor, extract
from evalkit.generate import Adapter, GenerationRequest
from evalkit.generate.adapter import check_task
from evalkit.imageops.masks import mask_crops
from evalkit.run.images import ImageContractError, check_images
from evalkit.run.timing import (
    BatchTimer,
    MachineLoad,
    PeakMemory,
    Repeat,
    Stopwatch,
    reported_summary,
    spread,
    torch_threads,
)
from evalkit.suite import Cell, TimingSpec

THROUGHPUT_ROWS = ("images_per_s", "s_per_image", "model_calls", "nfe", "ms_per_model_call", "peak_mem_mb")
COST_PER_IMAGE = "cost_per_image"  # a row only where the adapter reports a cost
TIMED_ROWS = ("images_per_s", "s_per_image", "ms_per_model_call")
NO_IMAGES = np.zeros((0, 3, 1, 1), np.uint8)


@dataclass
class Shard:
    """What one process generated for one cell: per-sample features, the kept images, costs."""

    indices: np.ndarray
    features: dict[str, np.ndarray]  # "extractor/output" → (len(indices), ...)
    kept: np.ndarray  # uint8 images of this shard's samples with index < grid_samples
    model_calls: int | None = 0  # per trajectory; None: unknown (an adapter that reports none)
    nfe: int | None = 0
    calls_total: int = 0  # batched denoiser calls, summed over batches
    warmup_s: float = 0.0  # warm-up batches (the shard's first ones, or extra ones), not timed as repeats
    generate_s: float = 0.0  # the shard's other batches
    extract_s: float = 0.0
    extra_s: float = 0.0  # batches run for timing only (outputs discarded)
    peak_mb: float = 0.0
    peak_rss_mb: float = 0.0
    error: str | None = None  # traceback, if this rank failed
    repeats: list[Repeat] = field(default_factory=list)  # timed batches of the fixed size
    warmup_batches: int = 0
    extra_batches: int = 0
    machine: dict[str, Any] = field(default_factory=dict)  # MachineLoad.record(): load, CPU, threads, GPU
    schedule: dict[str, Any] | None = None  # the schedule the sampler walked (GeneratedBatch.schedule)
    measured: bool = True  # False: the adapter's ``measures_cost`` is False (evalkit's clock times no generation)
    reported_s: list[float] = field(default_factory=list)  # per sample, NaN where not reported
    reported_cost: list[float] = field(default_factory=list)


def generate_shard(
    adapter: Adapter,
    extractors: dict[str, Extractor],
    cell: Cell,
    mine: np.ndarray,
    *,
    request: Callable[[np.ndarray], GenerationRequest],
    warm_up: bool,
    keep: int,
    device: str,
    batch_size: int,
    timing: TimingSpec | None = None,
    progress: bool = False,
    crops: dict[str, Extractor] | None = None,
) -> Shard:
    """Generate samples ``mine`` (in batches, streamed), extract their features, keep the first images, and
    time every batch (:class:`~evalkit.run.timing.BatchTimer`): when ``warm_up`` (a model's or sampler's first
    cell) the first ``timing.warmup`` batches are untimed; every later batch of the fixed size
    ``min(batch_size, n)`` is a repeat, and only when there are fewer than ``timing.repeats`` are extra batches of
    that size generated, timed and discarded. ``timing.threads`` sets torch's CPU threads for the cell. ``crops``:
    extractors that also read each image cropped to its mask (:func:`evalkit.imageops.masks.mask_crops`)."""
    timing = timing or TimingSpec()
    fixed = min(batch_size, cell.n)
    measured = bool(getattr(adapter, "measures_cost", True))
    timer = BatchTimer(device, warmup=timing.warmup if warm_up and measured else 0, fixed=fixed)
    bar = tqdm(total=len(mine), desc="  samples", unit="sample", leave=False, disable=not progress, file=sys.stderr)
    with torch_threads(timing.threads), MachineLoad(device) as load, PeakMemory(device) as mem, bar:
        shard = _stream(adapter, extractors, cell, mine, request, timer, load, keep, bar, crops or {})
        if len(mine) and measured:
            _timing_batches(adapter, request, timer, load, timing.repeats, fixed, bar)
    shard.warmup_s, shard.generate_s, shard.extra_s = timer.warmup_s, timer.samples_s, timer.extra_s
    shard.repeats, shard.extra_batches = timer.repeats, timer.extra_batches
    shard.warmup_batches = min(timer.warmup, timer.batches)
    shard.peak_mb, shard.peak_rss_mb, shard.machine = mem.peak_mb, mem.peak_rss_mb, load.record()
    shard.measured = measured
    return shard


def _stream(
    adapter: Adapter,
    extractors: dict[str, Extractor],
    cell: Cell,
    mine: np.ndarray,
    request: Callable[[np.ndarray], GenerationRequest],
    timer: BatchTimer,
    load: MachineLoad,
    keep: int,
    bar: tqdm,
    crops: dict[str, Extractor],
) -> Shard:
    """The shard's own batches, each timed, checked, extracted and dropped (only the first ``keep`` images kept)."""
    ext_sw = Stopwatch(timer.stopwatch.device)
    # One preallocated array per output, filled batch by batch: per-batch arrays kept in a list
    # fragment the heap (peak RSS then grows with N far beyond the features themselves).
    feats: dict[str, np.ndarray] = {}
    kept: list[torch.Tensor] = []
    model_calls = nfe = calls_total = done = 0
    schedule = None
    reported: dict[str, list[float]] = {"reported_s": [], "reported_cost": []}
    req = request(mine) if len(mine) else None
    if req is not None:
        check_task(adapter, req, cell.model.name)  # a model that would ignore the source image is refused
    prompts = req.prompts if req is not None else None  # aligned with ``mine``: for extractors that score them
    stream = iter(adapter.generate(req) if req is not None else ())
    while True:
        with timer.measure():
            batch = next(stream, None)
        if batch is None:
            timer.book_tail()
            break
        idx = np.asarray(batch.indices)
        timer.book(len(idx), batch.model_calls or 0)
        load.sample()
        if not np.array_equal(idx, mine[done : done + len(idx)]):
            raise ImageContractError(
                f"cell {cell.cell_id}: adapter yielded samples out of order "
                f"(expected from index {int(mine[done]) if done < len(mine) else done})"
            )
        images = check_images(batch.images, cell.cell_id, idx)
        model_calls, nfe = _most(model_calls, batch.model_calls), _most(nfe, batch.nfe)
        calls_total += batch.model_calls or 0
        _add_reported(reported, batch, len(idx))
        schedule = schedule or getattr(batch, "schedule", None)
        with ext_sw.measure():
            batch_prompts = prompts[done : done + len(idx)] if prompts is not None else None
            _extract_into(feats, extractors, images, done, len(mine), batch_prompts)
            if crops and req is not None and req.masks is not None:
                cut = mask_crops(images.cpu().numpy(), req.masks[done : done + len(idx)].numpy())
                _extract_into(feats, crops, torch.from_numpy(cut), done, len(mine), batch_prompts)
        if idx[0] < keep:
            kept.append(images[torch.from_numpy(idx < keep)].cpu())
        done += len(idx)
        bar.update(len(idx))
    if done != len(mine):
        raise ImageContractError(f"cell {cell.cell_id}: adapter produced {done} samples, expected {len(mine)}")
    kept_images = torch.cat(kept).numpy() if kept else NO_IMAGES
    return Shard(
        mine, feats, kept_images, model_calls, nfe, calls_total, extract_s=ext_sw.seconds, schedule=schedule, **reported
    )


def _timing_batches(
    adapter: Adapter,
    request: Callable[[np.ndarray], GenerationRequest],
    timer: BatchTimer,
    load: MachineLoad,
    repeats: int,
    fixed: int,
    bar: tqdm,
) -> None:
    """Warm-ups the shard's own batches did not cover, then batches of the fixed size (the cell's first samples
    again) until there are ``repeats`` timed ones; their images are discarded, never extracted or counted."""
    idx = np.arange(fixed, dtype=np.int64)
    owed = timer.owed(repeats)
    for k in range(owed):
        bar.set_postfix_str(f"timing batch {k + 1}/{owed}")
        images = calls = 0
        with timer.measure():
            for batch in adapter.generate(request(idx)):
                images, calls = images + len(batch.indices), calls + batch.model_calls
        timer.book(images, calls, extra=True)
        load.sample()


Features = dict[str, np.ndarray]


def _extract_into(
    feats: Features, extractors: dict[str, Extractor], images: torch.Tensor, start: int, total: int, prompts=None
) -> None:
    """One forward per network for the batch (``prompts``, one per image, to extractors that take them); outputs
    written into rows ``start:start+B`` of ``feats``."""
    for name, ex in extractors.items():
        for out, arr in extract(ex, images, prompts).items():
            arr = np.asarray(arr)
            key = f"{name}/{out}"
            if key not in feats:
                feats[key] = np.empty((total, *arr.shape[1:]), dtype=arr.dtype)
            feats[key][start : start + len(arr)] = arr


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


def _most(a: int | None, b: int | None) -> int | None:
    """The larger count; None (unknown) once either is."""
    return None if a is None or b is None else max(a, b)


def _known_max(values: list[int | None]) -> float:
    """The largest count over shards, NaN when any shard's is unknown (a row value, never a guess)."""
    return math.nan if any(v is None for v in values) else max(values)  # type: ignore[type-var]


def _add_reported(reported: dict[str, list[float]], batch: Any, n: int) -> None:
    """Append a batch's reported seconds and costs (NaN where it reports none) to the shard's per-sample lists."""
    for attr, key in (("reported_seconds", "reported_s"), ("cost", "reported_cost")):
        values = getattr(batch, attr, None)
        if values is None:
            reported[key] += [math.nan] * n
        elif len(values) != n:
            raise ImageContractError(f"{attr}: {len(values)} values for a batch of {n} images")
        else:
            reported[key] += [math.nan if v is None else float(v) for v in values]
