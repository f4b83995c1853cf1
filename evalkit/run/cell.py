"""One cell's work: generate a shard of samples (streamed through every extractor), then on rank 0 join
the shards and score them. Images are dropped after extraction; only per-sample features, a few
images and timings are kept."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from evalkit.features.base import Extractor
from evalkit.generate import Adapter, GenerationRequest
from evalkit.metrics.base import MetricInputs, get_metric
from evalkit.run.images import ImageContractError, check_images
from evalkit.run.timing import PeakMemory, Stopwatch
from evalkit.store import split_features
from evalkit.suite import THROUGHPUT, Cell, MetricSpec

THROUGHPUT_ROWS = ("images_per_s", "s_per_image", "model_calls", "nfe", "ms_per_model_call", "peak_mem_mb")
NO_IMAGES = np.zeros((0, 3, 1, 1), np.uint8)


@dataclass
class Shard:
    """What one process generated for one cell: per-sample features, the kept images, costs."""

    indices: np.ndarray
    features: dict[str, np.ndarray]  # "extractor/output" → (len(indices), ...)
    kept: np.ndarray  # uint8 images of this shard's samples with index < grid_samples
    model_calls: int = 0  # per trajectory
    nfe: int = 0
    calls_total: int = 0  # batched denoiser calls, summed over batches
    warmup_s: float = 0.0
    generate_s: float = 0.0
    extract_s: float = 0.0
    peak_mb: float = 0.0
    peak_rss_mb: float = 0.0
    error: str | None = None  # traceback, if this rank failed


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
) -> Shard:
    """Generate samples ``mine`` (in batches, streamed), extract their features, keep the first images."""
    warm = Stopwatch(device)
    if warm_up:  # not timed: a model's and a scheduler's first calls pay for lazy init
        with warm.measure():
            for _ in adapter.generate(request(mine[:1] if len(mine) else np.zeros(1, np.int64))):
                pass
    gen_sw, ext_sw = Stopwatch(device), Stopwatch(device)
    # One preallocated array per output, filled batch by batch: per-batch arrays kept in a list
    # fragment the heap (peak RSS then grows with N far beyond the features themselves).
    feats: dict[str, np.ndarray] = {}
    kept: list[torch.Tensor] = []
    model_calls = nfe = calls_total = done = 0
    with PeakMemory(device) as mem:
        stream = iter(adapter.generate(request(mine)) if len(mine) else ())
        while True:
            with gen_sw.measure():
                batch = next(stream, None)
            if batch is None:
                break
            idx = np.asarray(batch.indices)
            if not np.array_equal(idx, mine[done : done + len(idx)]):
                raise ImageContractError(
                    f"cell {cell.cell_id}: adapter yielded samples out of order "
                    f"(expected from index {int(mine[done]) if done < len(mine) else done})"
                )
            images = check_images(batch.images, cell.cell_id, idx)
            model_calls, nfe = max(model_calls, batch.model_calls), max(nfe, batch.nfe)
            calls_total += batch.model_calls
            with ext_sw.measure():
                _extract_into(feats, extractors, images, done, len(mine))
            if idx[0] < keep:
                kept.append(images[torch.from_numpy(idx < keep)].cpu())
            done += len(idx)
    if done != len(mine):
        raise ImageContractError(f"cell {cell.cell_id}: adapter produced {done} samples, expected {len(mine)}")
    return Shard(
        mine,
        feats,
        torch.cat(kept).numpy() if kept else NO_IMAGES,
        model_calls=model_calls,
        nfe=nfe,
        calls_total=calls_total,
        warmup_s=warm.seconds,
        generate_s=gen_sw.seconds,
        extract_s=ext_sw.seconds,
        peak_mb=mem.peak_mb,
        peak_rss_mb=mem.peak_rss_mb,
    )


def _extract_into(
    feats: dict[str, np.ndarray], extractors: dict[str, Extractor], images: torch.Tensor, start: int, total: int
) -> None:
    """One forward per network for the batch; outputs written into rows ``start:start+B`` of ``feats``."""
    for name, ex in extractors.items():
        for out, arr in ex(images).items():
            arr = np.asarray(arr)
            key = f"{name}/{out}"
            if key not in feats:
                feats[key] = np.empty((total, *arr.shape[1:]), dtype=arr.dtype)
            feats[key][start : start + len(arr)] = arr


def add_text_embeddings(
    features: dict[str, np.ndarray], extractors: dict[str, Extractor], prompts: list[str] | None
) -> None:
    """Per-sample text embeddings (``<extractor>/text_embeds``) from extractors that encode text, once per prompt."""
    if prompts is None:
        return
    for name, ex in extractors.items():
        encode = getattr(ex, "encode_text", None)
        if encode is not None:
            unique = sorted(set(prompts))
            table = dict(zip(unique, np.asarray(encode(unique))))
            features[f"{name}/text_embeds"] = np.stack([table[p] for p in prompts])


def costs(shards: list[Shard], n: int) -> dict[str, float]:
    """Cost rows of a cell. One process: n / seconds; K ranks: their rates add up, and s_per_image stays
    device-seconds per image."""
    gen_s = sum(s.generate_s for s in shards)
    calls_total = sum(s.calls_total for s in shards)
    return {
        "model_calls": max(s.model_calls for s in shards),
        "nfe": max(s.nfe for s in shards),
        "images_per_s": sum(len(s.indices) / s.generate_s if s.generate_s else math.nan for s in shards),
        "s_per_image": gen_s / n,
        "ms_per_model_call": 1000 * gen_s / calls_total if calls_total else math.nan,
        "peak_mem_mb": max(s.peak_mb for s in shards),
    }


def score(
    metrics: list[MetricSpec],
    features: dict[str, np.ndarray],
    reference: dict[str, dict[str, np.ndarray]],
    extractors: dict[str, Extractor],
    *,
    labels: np.ndarray | None,
    prompts: list[str] | None,
    seed: int,
) -> list[dict[str, Any]]:
    """Each metric of the suite on the cell's features → partial rows (metric, value, CI, extractor identity)."""
    by_extractor = split_features(features)
    rows = []
    for spec in metrics:
        if spec.name == THROUGHPUT:
            continue
        ex = extractors[spec.extractor]
        inputs = MetricInputs(
            gen=by_extractor.get(spec.extractor, {}),
            ref=reference.get(spec.extractor),
            labels=labels,
            prompts=prompts,
            seed=seed,
            options=spec.options,
        )
        for metric, val in get_metric(spec.name).compute(inputs).items():
            rows.append(
                {
                    "metric": metric,
                    "value": float(val.value),
                    "std": _num(val.std),
                    "ci_low": _num(val.ci_low),
                    "ci_high": _num(val.ci_high),
                    "extractor": spec.extractor,
                    "weights_id": ex.weights_id,
                    "mode": ex.mode,
                }
            )
    return rows


def _num(x: float | None) -> float:
    return math.nan if x is None else float(x)
