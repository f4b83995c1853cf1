"""Executes a suite: for each cell not already done, generate → extract → metrics → store.

Images stream from the adapter in batches straight into every extractor the suite needs (one
forward per image per network) and are dropped; only per-sample features, a few sample images and
timings are kept. A finished cell is written atomically, so a killed run resumes where it stopped.
Under torchrun each rank generates its shard of every cell and rank 0 gathers, scores and writes
(:mod:`evalkit.run.distributed`).
"""

from __future__ import annotations

import contextlib
import io
import time
import traceback
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid
from tqdm.auto import tqdm

import evalkit
from evalkit.generate import Adapter, GenerationRequest, build_adapter
from evalkit.suite.conditions import Conditions, expand_conditions
from evalkit.run.distributed import Dist, setup
from evalkit.run.environment import environment
from evalkit.features.base import Extractor, build_extractor
from evalkit.metrics.base import MetricInputs, get_metric
from evalkit.references import open_reference, reference_features
from evalkit.store import RunStore, StoreError, tidy_frame
from evalkit.suite import Cell, Suite
from evalkit.run.timing import PeakMemory, Stopwatch
from evalkit.errors import RunError

THROUGHPUT_ROWS = ("images_per_s", "s_per_image", "model_calls", "nfe", "ms_per_model_call", "peak_mem_mb")


class ImageContractError(RunError):
    """An adapter yielded images that break the contract (shape, dtype, range, NaN)."""


class ModelChangedError(StoreError):
    """The run folder's finished cells were computed by other weights than the model loaded now."""


def weights_identity(info: dict[str, Any]) -> dict[str, Any]:
    """The parts of an adapter's ``info()`` that name its weights: hashes (``*sha256``) and a hub revision."""
    return {k: v for k, v in info.items() if k.endswith("sha256") or k == "revision"}


@dataclass
class Shard:
    """What one process generated for one cell: per-sample features, the kept images, costs."""

    indices: np.ndarray
    features: dict[str, np.ndarray]
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


@dataclass
class RunSummary:
    run_dir: Path
    done: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def check_images(images: torch.Tensor, cell_id: str, indices: np.ndarray) -> torch.Tensor:
    """Validate one batch and return it as uint8 (B, 3, H, W); floats in [0, 1] are rounded once."""
    where = f"cell {cell_id}, samples {int(indices[0])}..{int(indices[-1])}"
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if hasattr(images, "shape") else type(images).__name__
        raise ImageContractError(f"{where}: expected images of shape (B, 3, H, W); got {shape}")
    if images.shape[0] != len(indices):
        raise ImageContractError(f"{where}: {images.shape[0]} images for {len(indices)} sample indices")
    if images.dtype == torch.uint8:
        return images
    if not images.is_floating_point():
        raise ImageContractError(f"{where}: expected uint8 or float images; got {images.dtype}")
    bad = ~torch.isfinite(images).flatten(1).all(1)
    if bad.any():
        raise ImageContractError(f"{where}: NaN/Inf in samples {indices[bad.cpu().numpy()].tolist()}")
    out_of_range = ((images < 0) | (images > 1)).flatten(1).any(1)
    if out_of_range.any():
        raise ImageContractError(f"{where}: float images must lie in [0, 1]; samples "
                                 f"{indices[out_of_range.cpu().numpy()].tolist()} do not")
    return (images * 255).round().to(torch.uint8)


def grid_png(images: np.ndarray, nrow: int = 8) -> bytes:
    grid = make_grid(torch.from_numpy(images), nrow=nrow, padding=2, pad_value=64)
    buf = io.BytesIO()
    Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


class Runner:
    """Runs one suite into one run folder. Build once, call :meth:`run`."""

    def __init__(self, suite: Suite, out: str | Path, *, device: str = "auto", batch_size: int | None = None,
                 progress: bool = False, cache_dir: Path | None = None):
        self.suite = suite
        self.store = RunStore(out)
        self.dist: Dist
        self.dist, self.device = setup(device)  # under torchrun: join the job, cuda:LOCAL_RANK
        self.batch_size = batch_size or suite.batch_size
        self.progress = progress and self.dist.is_main
        self.cache_dir = cache_dir
        self.base_dir = Path(suite.file).parent if suite.file else Path.cwd()
        self.conditions: Conditions = expand_conditions(suite.conditions, suite.samples, self.base_dir)
        self._extractors: dict[str, Extractor] = {}
        self._ref_features: dict[str, dict[str, np.ndarray]] | None = None
        self._reference_info: dict[str, Any] | None = None
        self._adapters: dict[str, Adapter] = {}
        self._model_info: dict[str, dict[str, Any]] = {}  # every model built in this run, for run.json
        self._warmed: set[tuple[str, str]] = set()  # (model, sampler label) pairs already warmed up
        self.run_id = ""

    def log(self, message: str) -> None:
        if self.progress:
            tqdm.write(message, file=sys.stderr)

    # -- parts built once per run ----------------------------------------------------------------
    def extractors(self) -> dict[str, Extractor]:
        if not self._extractors:
            for name in sorted({m.extractor for m in self.suite.metrics if m.extractor}):
                self._extractors[name] = build_extractor(name, device=self.device)
        return self._extractors

    def reference_features(self) -> dict[str, dict[str, np.ndarray]]:
        if self._ref_features is None:
            self._ref_features = {}
            if self.suite.reference is not None and self.extractors():
                ref = open_reference(self.suite.reference, base_dir=self.base_dir)
                self.log(f"reference {ref.name}: {len(ref)} images")
                self._ref_features = reference_features(ref, list(self.extractors().values()),
                                                        cache_dir=self.cache_dir, batch_size=self.batch_size)
                self._reference_info = {"name": ref.name, "fingerprint": ref.fingerprint, "n": len(ref)}
        return self._ref_features

    def adapter(self, cell: Cell) -> Adapter:
        key = cell.model.name
        if key not in self._adapters:
            # one model in memory at a time: grids are ordered model-major
            for other in list(self._adapters):
                self._model_info[other] = self._adapters[other].info()  # some adapters fill info in lazily
                self._adapters.pop(other).close()
            self._adapters[key] = build_adapter(cell.model.adapter, device=self.device, **cell.model.options)
            self._warmed = {w for w in self._warmed if w[0] != key}  # a fresh model warms up again
            now = self._adapters[key].info()
            self.dist.on_main(lambda: self._check_model_unchanged(key, now))  # every rank builds here
        return self._adapters[key]

    def _check_model_unchanged(self, model: str, info: dict[str, Any]) -> None:
        """Resume only onto cells made by the same weights: the suite (and so the cell hash) may name a
        model by path or by the built-in zoo while the files behind it were retrained."""
        now = weights_identity(info)
        if not now:
            return  # the adapter names no weights (noise, most plugins): nothing to compare
        stale: dict[str, dict[str, Any]] = {}
        for c in self.suite.cells():
            if c.model.name != model or not self._is_done(c):
                continue
            then = weights_identity((self.store.read_cell(c.cell_id) or {}).get("model_info") or {})
            if then and then != now:  # cells written before cell.json carried model_info are not judged
                stale[c.cell_id] = then
        if stale:
            first = next(iter(stale))
            raise ModelChangedError(
                f"model {model!r} has other weights than when {len(stale)} finished cell(s) in {self.store.root} "
                f"were computed (e.g. {first}): then {stale[first]}, now {now}. Finished cells are kept; run into "
                f"a new --out folder, or delete those cells' folders under {self.store.root / 'cells'} to "
                f"recompute them")

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Run every pending cell. Only rank 0 locks and writes the run folder; all ranks generate."""
        summary = RunSummary(self.store.root)
        main = self.dist.is_main
        with self.store if main else contextlib.nullcontext():
            cells = self.suite.cells()
            pending_ids = self.dist.on_main(lambda: self._plan(cells, summary))
            pending = [c for c in cells if c.cell_id in pending_ids]
            for cell in (bar := tqdm(pending, desc="cells", unit="cell", disable=not self.progress, file=sys.stderr)):
                bar.set_postfix_str(cell.cell_id)
                try:
                    self.run_cell(cell)
                    summary.done.append(cell.cell_id)
                except (KeyboardInterrupt, SystemExit, ModelChangedError):
                    raise
                except Exception as e:  # one broken cell must not lose the others
                    if not main:
                        raise  # only rank 0 records failures (a rank's own errors travel in its shard)
                    tb = traceback.format_exc()
                    self.store.write_failed_cell(cell.cell_id, self._cell_record(cell), tb)
                    summary.failed[cell.cell_id] = f"{type(e).__name__}: {e}"
                    self.log(f"  FAILED: {type(e).__name__}: {e}")
            summary = self.dist.on_main(lambda: self._finish(cells, summary))
        for a in self._adapters.values():
            a.close()
        return summary

    def _plan(self, cells: list[Cell], summary: RunSummary) -> list[str]:
        """Rank 0: the cells still to do (resume), the manifest, the reference features."""
        pending = [c for c in cells if not self._is_done(c)]
        summary.reused = [c.cell_id for c in cells if c not in pending]
        self._write_manifest(cells, summary)
        if summary.reused:
            self.log(f"resuming: {len(summary.reused)} of {len(cells)} cells already done")
        if pending:
            self.reference_features()
        return [c.cell_id for c in pending]

    def _finish(self, cells: list[Cell], summary: RunSummary) -> RunSummary:
        rows = [r for c in cells if self._is_done(c) for r in self.store.cell_rows(c.cell_id)]
        self.store.write_results(tidy_frame(rows))
        self._write_manifest(cells, summary)
        return summary

    def _is_done(self, cell: Cell) -> bool:
        rec = self.store.read_cell(cell.cell_id)
        return bool(rec) and rec.get("cell_hash") == self.suite.cell_hash(cell) and self.store.is_done(cell.cell_id)

    def _cell_record(self, cell: Cell) -> dict[str, Any]:
        return {**cell.describe(), "sampler_name": cell.sampler.name, "sampler_options": cell.sampler.options,
                "n": cell.n, "seed": cell.seed, "batch_size": self.batch_size, "device": self.device,
                "world_size": self.dist.world_size, "cell_hash": self.suite.cell_hash(cell)}

    def _write_manifest(self, cells: list[Cell], summary: RunSummary) -> None:
        old = self.store.read_manifest() or {}
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        env = environment(self.device)
        failed = sum(1 for c in cells if (self.store.read_cell(c.cell_id) or {}).get("status") == "failed")
        done = sum(1 for c in cells if self._is_done(c))
        self.run_id = old.get("run_id") or f"{self.suite.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
        self.store.write_manifest({
            "run_id": self.run_id,
            "suite": self.suite.name, "suite_file": self.suite.file, "description": self.suite.description,
            "config": self.suite.to_config(), "config_hash": self.suite.config_hash(),
            "created_at": old.get("created_at", now), "updated_at": now,
            "evalkit_version": evalkit.__version__, "git_commit": env["evalkit_git_commit"],
            "environment": env, "batch_size": self.batch_size, "world_size": self.dist.world_size,
            "cells": [c.describe() for c in cells],
            "models": {**old.get("models", {}), **self._model_info,
                       **{name: a.info() for name, a in self._adapters.items()}},
            "reference": self._reference_info or old.get("reference"),
            "extractors": {n: {"weights_id": e.weights_id, "mode": e.mode} for n, e in self._extractors.items()}
            or old.get("extractors", {}),
            "status": {"done": done, "failed": failed, "total": len(cells)},
        })

    # -- one cell --------------------------------------------------------------------------------
    def run_cell(self, cell: Cell) -> None:
        """Generate this rank's shard, gather the shards on rank 0, score and write the cell there."""
        indices = np.arange(cell.n, dtype=np.int64)
        mine = self.dist.shard(indices, self.batch_size)
        if not self.dist.enabled:
            shards = [self._generate(cell, mine)]
        else:  # a failing rank must still reach the gather, or the others wait for ever
            try:
                shard = self._generate(cell, mine)
            except Exception:  # noqa: BLE001 - reported by rank 0 as this cell's failure
                shard = Shard(mine, {}, np.zeros((0, 3, 1, 1), np.uint8), error=traceback.format_exc())
            shards = self.dist.gather(shard)
            if not self.dist.is_main:
                return
            errors = [f"rank {r}:\n{s.error}" for r, s in enumerate(shards) if s.error]
            if errors:
                raise RuntimeError(f"cell {cell.cell_id} failed on {len(errors)} of {len(shards)} ranks\n"
                                   + "\n".join(errors))
        self._score_and_write(cell, indices, shards)

    def _request(self, cell: Cell, idx: np.ndarray) -> GenerationRequest:
        lab, pr = self.conditions.take(idx)
        return GenerationRequest(indices=idx, seed=cell.seed, sampler=cell.sampler.name, steps=cell.steps,
                                 guidance=cell.guidance, batch_size=self.batch_size,
                                 sampler_options=cell.sampler.options, labels=lab, prompts=pr, device=self.device)

    def _generate(self, cell: Cell, mine: np.ndarray) -> Shard:
        """Generate samples ``mine`` (in batches, streamed) and extract their features; keep a few images."""
        adapter = self.adapter(cell)
        extractors = self.extractors()
        warm = Stopwatch(self.device)
        if (cell.model.name, cell.sampler.label) not in self._warmed:
            # A model's and a scheduler's first calls pay for lazy init and allocator growth: not timed.
            # Once per model × sampler, not per cell: a one-sample trajectory per cell is pure overhead.
            with warm.measure():
                for _ in adapter.generate(self._request(cell, mine[:1] if len(mine) else np.zeros(1, np.int64))):
                    pass
            self._warmed.add((cell.model.name, cell.sampler.label))
        gen_sw, ext_sw = Stopwatch(self.device), Stopwatch(self.device)
        # One preallocated array per output, filled batch by batch: per-batch arrays kept in a list
        # fragment the heap (peak RSS then grows with N far beyond the features themselves).
        feats: dict[str, np.ndarray] = {}
        keep = min(self.suite.grid_samples, cell.n)
        kept: list[torch.Tensor] = []
        model_calls = nfe = calls_total = 0
        done = 0
        with PeakMemory(self.device) as mem:
            stream = iter(adapter.generate(self._request(cell, mine)) if len(mine) else ())
            while True:
                with gen_sw.measure():
                    batch = next(stream, None)
                if batch is None:
                    break
                idx = np.asarray(batch.indices)
                if not np.array_equal(idx, mine[done:done + len(idx)]):
                    raise ImageContractError(f"cell {cell.cell_id}: adapter yielded samples out of order "
                                             f"(expected from index {int(mine[done]) if done < len(mine) else done})")
                images = check_images(batch.images, cell.cell_id, idx)
                model_calls, nfe = max(model_calls, batch.model_calls), max(nfe, batch.nfe)
                calls_total += batch.model_calls
                with ext_sw.measure():
                    for name, ex in extractors.items():
                        for out, arr in ex(images).items():
                            arr = np.asarray(arr)
                            key = f"{name}/{out}"
                            if key not in feats:
                                feats[key] = np.empty((len(mine), *arr.shape[1:]), dtype=arr.dtype)
                            feats[key][done:done + len(idx)] = arr
                if idx[0] < keep:
                    kept.append(images[torch.from_numpy(idx < keep)].cpu())
                done += len(idx)
        if done != len(mine):
            raise ImageContractError(f"cell {cell.cell_id}: adapter produced {done} samples, expected {len(mine)}")
        return Shard(mine, feats,
                     torch.cat(kept).numpy() if kept else np.zeros((0, 3, 1, 1), np.uint8),
                     model_calls=model_calls, nfe=nfe, calls_total=calls_total, warmup_s=warm.seconds,
                     generate_s=gen_sw.seconds, extract_s=ext_sw.seconds, peak_mb=mem.peak_mb,
                     peak_rss_mb=mem.peak_rss_mb)

    def _score_and_write(self, cell: Cell, indices: np.ndarray, shards: list[Shard]) -> None:
        """Rank 0: join the shards in sample order, compute the metrics and cost rows, write the cell."""
        t_start = time.perf_counter()
        shards = [s for s in shards if len(s.indices)]
        if not np.array_equal(np.concatenate([s.indices for s in shards]), indices):
            raise RuntimeError(f"cell {cell.cell_id}: the shards do not cover samples 0..{cell.n - 1} in order")
        features = {k: np.concatenate([s.features[k] for s in shards]) for k in shards[0].features}
        labels, prompts = self.conditions.take(indices)
        self._add_text_embeddings(features, prompts)

        t_metrics = time.perf_counter()
        rows = self._metric_rows(cell, features, labels, prompts)
        metrics_s = time.perf_counter() - t_metrics
        model_calls, nfe = max(s.model_calls for s in shards), max(s.nfe for s in shards)
        # one process: n / seconds. K ranks: their rates add up; s_per_image stays device-seconds per image
        gen_s = sum(s.generate_s for s in shards)
        calls_total = sum(s.calls_total for s in shards)
        rate = sum(len(s.indices) / s.generate_s if s.generate_s else float("nan") for s in shards)
        cost = {"model_calls": model_calls, "nfe": nfe, "images_per_s": rate, "s_per_image": gen_s / cell.n,
                "ms_per_model_call": 1000 * gen_s / calls_total if calls_total else float("nan"),
                "peak_mem_mb": max(s.peak_mb for s in shards)}
        rows += [self._row(cell, name, cost[name]) for name in THROUGHPUT_ROWS]
        for r in rows:
            r.update(model_calls=model_calls, nfe=nfe, s_per_image=cost["s_per_image"])
        keep = min(self.suite.grid_samples, cell.n)
        shown = np.concatenate([s.kept for s in shards if len(s.kept)])[:keep]
        samples = {"images": shown, "indices": indices[:keep],
                   "labels": labels[:keep] if labels is not None else np.full(keep, -1, dtype=np.int64)}
        if prompts is not None:
            samples["prompts"] = np.array(prompts[:keep])
        timings = {"warmup_s": max(s.warmup_s for s in shards), "generate_s": max(s.generate_s for s in shards),
                   "extract_s": max(s.extract_s for s in shards), "metrics_s": metrics_s,
                   "total_s": time.perf_counter() - t_start + max(s.warmup_s + s.generate_s + s.extract_s
                                                                  for s in shards)}
        record = {**self._cell_record(cell), **cost, "peak_rss_mb": max(s.peak_rss_mb for s in shards),
                  "timings": timings, "model_info": self.adapter(cell).info()}
        if len(shards) > 1:
            record["ranks"] = [{"n": len(s.indices), "generate_s": s.generate_s, "extract_s": s.extract_s,
                                "peak_mem_mb": s.peak_mb} for s in shards]
        self.store.write_cell(cell.cell_id, record, features=features, rows=rows, grid_png=grid_png(shown),
                              samples=samples)

    def _add_text_embeddings(self, features: dict[str, np.ndarray], prompts: list[str] | None) -> None:
        if prompts is None:
            return
        for name, ex in self.extractors().items():
            encode = getattr(ex, "encode_text", None)
            if encode is not None:
                unique = sorted(set(prompts))
                table = dict(zip(unique, np.asarray(encode(unique))))
                features[f"{name}/text_embeds"] = np.stack([table[p] for p in prompts])

    def _metric_rows(self, cell: Cell, features: dict[str, np.ndarray], labels: np.ndarray | None,
                     prompts: list[str] | None) -> list[dict[str, Any]]:
        rows = []
        ref_all = self.reference_features()
        for spec in self.suite.metrics:
            if spec.name == "throughput":
                continue
            defn = get_metric(spec.name)
            ex = self._extractors[spec.extractor]
            prefix = f"{spec.extractor}/"
            gen = {k[len(prefix):]: v for k, v in features.items() if k.startswith(prefix)}
            inputs = MetricInputs(gen=gen, ref=ref_all.get(spec.extractor), labels=labels, prompts=prompts,
                                  seed=cell.seed, options=spec.options)
            for metric, val in defn.compute(inputs).items():
                rows.append(self._row(cell, metric, val.value, std=val.std, ci_low=val.ci_low, ci_high=val.ci_high,
                                      extractor=spec.extractor, weights_id=ex.weights_id, mode=ex.mode))
        return rows

    def _row(self, cell: Cell, metric: str, value: float, *, std: float | None = None, ci_low: float | None = None,
             ci_high: float | None = None, extractor: str = "", weights_id: str = "", mode: str = "") -> dict[str, Any]:
        nan = float("nan")
        return {"run_id": self.run_id, "suite": self.suite.name,
                "model": cell.model.name, "sampler": cell.sampler.label, "steps": cell.steps,
                "guidance": cell.guidance, "n": cell.n, "seed": cell.seed, "metric": metric, "value": float(value),
                "std": nan if std is None else float(std), "ci_low": nan if ci_low is None else float(ci_low),
                "ci_high": nan if ci_high is None else float(ci_high), "extractor": extractor,
                "weights_id": weights_id, "mode": mode, "device": self.device,
                "config_hash": self.suite.config_hash()}


def run_suite(suite: Suite, out: str | Path, **kwargs: Any) -> RunSummary:
    return Runner(suite, out, **kwargs).run()
