"""One cell's work: generate a shard of samples (streamed through every extractor) while timing its batches,
then on rank 0 join the shards and score them. Images are dropped after extraction; only per-sample features,
a few images and timings are kept. The cost rows made from the timings: :mod:`evalkit.run.costs`.

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
    torch_threads,
)
from evalkit.suite import Cell, TimingSpec

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
            masks = None if req is None or req.masks is None else req.masks[done : done + len(idx)]
            _extract_into(feats, extractors, images, done, len(mine), batch_prompts, crops=crops, masks=masks)
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
    feats: Features,
    extractors: dict[str, Extractor],
    images: torch.Tensor,
    start: int,
    total: int,
    prompts: list[str] | None = None,
    *,
    crops: dict[str, Extractor] | None = None,
    masks: torch.Tensor | None = None,
) -> None:
    """One forward per network for the batch (``prompts``, one per image, to extractors that take them); outputs
    written into rows ``start:start+B`` of ``feats``. ``crops`` (with the batch's ``masks``): extractors run again
    on the images cropped to their masks."""
    if crops and masks is not None:
        cut = torch.from_numpy(mask_crops(images.cpu().numpy(), masks.numpy()))
        _extract_into(feats, crops, cut, start, total, prompts)
    for name, ex in extractors.items():
        for out, arr in extract(ex, images, prompts).items():
            arr = np.asarray(arr)
            key = f"{name}/{out}"
            if key not in feats:
                feats[key] = np.empty((total, *arr.shape[1:]), dtype=arr.dtype)
            feats[key][start : start + len(arr)] = arr


def _most(a: int | None, b: int | None) -> int | None:
    """The larger count; None (unknown) once either is."""
    return None if a is None or b is None else max(a, b)


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
