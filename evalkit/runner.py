"""Executes a suite: for each cell not already done, generate → extract → metrics → store.

Images stream from the adapter in batches straight into every extractor the suite needs (one
forward per image per network) and are dropped; only per-sample features, a few sample images and
timings are kept. A finished cell is written atomically, so a killed run resumes where it stopped.
"""

from __future__ import annotations

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
from evalkit.adapters import Adapter, GenerationRequest, build_adapter
from evalkit.conditions import Conditions, expand_conditions
from evalkit.environment import environment, resolve_device
from evalkit.features.base import Extractor, build_extractor
from evalkit.metrics.base import MetricInputs, get_metric
from evalkit.references import open_reference, reference_features
from evalkit.store import RunStore, tidy_frame
from evalkit.suite import Cell, Suite
from evalkit.timing import PeakMemory, Stopwatch

THROUGHPUT_ROWS = ("images_per_s", "s_per_image", "model_calls", "nfe", "ms_per_model_call", "peak_mem_mb")


class ImageContractError(ValueError):
    """An adapter yielded images that break the contract (shape, dtype, range, NaN)."""


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
        self.device = resolve_device(device)
        self.batch_size = batch_size or suite.batch_size
        self.progress = progress
        self.cache_dir = cache_dir
        self.base_dir = Path(suite.file).parent if suite.file else Path.cwd()
        self.conditions: Conditions = expand_conditions(suite.conditions, suite.samples, self.base_dir)
        self._extractors: dict[str, Extractor] = {}
        self._ref_features: dict[str, dict[str, np.ndarray]] | None = None
        self._reference_info: dict[str, Any] | None = None
        self._adapters: dict[str, Adapter] = {}
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
                self._adapters.pop(other).close()
            self._adapters[key] = build_adapter(cell.model.adapter, device=self.device, **cell.model.options)
        return self._adapters[key]

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        summary = RunSummary(self.store.root)
        with self.store:
            cells = self.suite.cells()
            pending = [c for c in cells if not self._is_done(c)]
            summary.reused = [c.cell_id for c in cells if c not in pending]
            self._write_manifest(cells, summary)
            if summary.reused:
                self.log(f"resuming: {len(summary.reused)} of {len(cells)} cells already done")
            if pending:
                self.reference_features()
            for cell in (bar := tqdm(pending, desc="cells", unit="cell", disable=not self.progress, file=sys.stderr)):
                bar.set_postfix_str(cell.cell_id)
                try:
                    self.run_cell(cell)
                    summary.done.append(cell.cell_id)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # one broken cell must not lose the others
                    tb = traceback.format_exc()
                    self.store.write_failed_cell(cell.cell_id, self._cell_record(cell), tb)
                    summary.failed[cell.cell_id] = f"{type(e).__name__}: {e}"
                    self.log(f"  FAILED: {type(e).__name__}: {e}")
            rows = [r for c in cells if self._is_done(c) for r in self.store.cell_rows(c.cell_id)]
            self.store.write_results(tidy_frame(rows))
            self._write_manifest(cells, summary)
        for a in self._adapters.values():
            a.close()
        return summary

    def _is_done(self, cell: Cell) -> bool:
        rec = self.store.read_cell(cell.cell_id)
        return bool(rec) and rec.get("cell_hash") == self.suite.cell_hash(cell) and self.store.is_done(cell.cell_id)

    def _cell_record(self, cell: Cell) -> dict[str, Any]:
        return {**cell.describe(), "sampler_name": cell.sampler.name, "sampler_options": cell.sampler.options,
                "n": cell.n, "seed": cell.seed, "batch_size": self.batch_size, "device": self.device,
                "cell_hash": self.suite.cell_hash(cell)}

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
            "environment": env, "batch_size": self.batch_size,
            "cells": [c.describe() for c in cells],
            "models": {name: a.info() for name, a in self._adapters.items()} or old.get("models", {}),
            "reference": self._reference_info or old.get("reference"),
            "extractors": {n: {"weights_id": e.weights_id, "mode": e.mode} for n, e in self._extractors.items()}
            or old.get("extractors", {}),
            "status": {"done": done, "failed": failed, "total": len(cells)},
        })

    # -- one cell --------------------------------------------------------------------------------
    def run_cell(self, cell: Cell) -> None:
        adapter = self.adapter(cell)
        extractors = self.extractors()
        indices = np.arange(cell.n, dtype=np.int64)
        labels, prompts = self.conditions.take(indices)

        def request(idx: np.ndarray) -> GenerationRequest:
            lab, pr = self.conditions.take(idx)
            return GenerationRequest(indices=idx, seed=cell.seed, sampler=cell.sampler.name, steps=cell.steps,
                                     guidance=cell.guidance, batch_size=self.batch_size,
                                     sampler_options=cell.sampler.options, labels=lab, prompts=pr,
                                     device=self.device)

        t_start = time.perf_counter()
        warm = Stopwatch(self.device)
        with warm.measure():  # first calls pay for lazy init and allocator growth: not timed
            for _ in adapter.generate(request(indices[:1])):
                pass
        gen_sw, ext_sw = Stopwatch(self.device), Stopwatch(self.device)
        feats: dict[str, list[np.ndarray]] = {}
        keep = min(self.suite.grid_samples, cell.n)
        kept: list[torch.Tensor] = []
        model_calls = nfe = 0
        done = 0
        with PeakMemory(self.device) as mem:
            stream = iter(adapter.generate(request(indices)))
            while True:
                with gen_sw.measure():
                    batch = next(stream, None)
                if batch is None:
                    break
                idx = np.asarray(batch.indices)
                if not np.array_equal(idx, indices[done:done + len(idx)]):
                    raise ImageContractError(f"cell {cell.cell_id}: adapter yielded samples out of order "
                                             f"(expected from index {done})")
                images = check_images(batch.images, cell.cell_id, idx)
                model_calls, nfe = max(model_calls, batch.model_calls), max(nfe, batch.nfe)
                with ext_sw.measure():
                    for name, ex in extractors.items():
                        for out, arr in ex(images).items():
                            feats.setdefault(f"{name}/{out}", []).append(np.asarray(arr))
                if done < keep:
                    kept.append(images[: keep - done].cpu())
                done += len(idx)
        if done != cell.n:
            raise ImageContractError(f"cell {cell.cell_id}: adapter produced {done} samples, expected {cell.n}")
        features = {k: np.concatenate(v) for k, v in feats.items()}
        self._add_text_embeddings(features, prompts)

        t_metrics = time.perf_counter()
        rows = self._metric_rows(cell, features, labels, prompts)
        metrics_s = time.perf_counter() - t_metrics
        gen_s = gen_sw.seconds
        calls_total = -(-cell.n // self.batch_size) * model_calls  # batches × calls per trajectory
        cost = {"model_calls": model_calls, "nfe": nfe, "images_per_s": cell.n / gen_s if gen_s else float("nan"),
                "s_per_image": gen_s / cell.n, "ms_per_model_call": 1000 * gen_s / calls_total if calls_total else float("nan"),
                "peak_mem_mb": mem.peak_mb}
        rows += [self._row(cell, name, cost[name]) for name in THROUGHPUT_ROWS]
        for r in rows:
            r.update(model_calls=model_calls, nfe=nfe, s_per_image=cost["s_per_image"])
        shown = torch.cat(kept).numpy()
        samples = {"images": shown, "indices": indices[:keep],
                   "labels": labels[:keep] if labels is not None else np.full(keep, -1, dtype=np.int64)}
        if prompts is not None:
            samples["prompts"] = np.array(prompts[:keep])
        record = {**self._cell_record(cell), **cost, "peak_rss_mb": mem.peak_rss_mb,
                  "timings": {"warmup_s": warm.seconds, "generate_s": gen_s, "extract_s": ext_sw.seconds,
                              "metrics_s": metrics_s, "total_s": time.perf_counter() - t_start}}
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
