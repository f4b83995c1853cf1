"""Executes a suite: for each cell not already done, generate → extract → metrics → store.

Before anything is built, :mod:`evalkit.run.preflight` checks what the suite needs (weights, metric preconditions,
prompt files, adapter options) and reports every problem at once. Images stream from the adapter in batches straight
into every extractor the suite needs (one forward per image per network) and are dropped (:mod:`evalkit.run.cell`);
each metric is scored on its own (:mod:`evalkit.run.scoring`). A finished cell is written atomically and the results
table rewritten after it: a killed run resumes where it stopped and leaves the table of what finished. Under
torchrun each rank generates its shard of every cell; rank 0 gathers, scores, writes (:mod:`evalkit.run.distributed`).
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

import evalkit
from evalkit.errors import EXIT_FAILED, EXIT_OK, RunError, StoreError
from evalkit.features.base import Extractor, build_extractor
from evalkit.generate import Adapter, GenerationRequest
from evalkit.references import default_cache_dir
from evalkit.run.cell import NO_IMAGES, Shard, generate_shard
from evalkit.run.costs import cost_rows, costs, phase_seconds, timing_record
from evalkit.run.distributed import Dist, setup
from evalkit.run.environment import environment
from evalkit.run.images import grid_png
from evalkit.run.models import ModelCache, ModelChangedError, stale_cells, weights_identity
from evalkit.run.preflight import PreflightError, preflight
from evalkit.run.records import cell_record, result_row
from evalkit.run.reference_data import RunReferences
from evalkit.run.scoring import MASKED, add_text_embeddings, score
from evalkit.run.task_inputs import RunTasks
from evalkit.store import RunStore, tidy_frame
from evalkit.store.folder import finished_cells, record_config
from evalkit.study.floors import suite_floors
from evalkit.suite import Cell, Conditions, Suite, expand_conditions


@dataclass
class RunSummary:
    run_dir: Path
    done: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    failed_metrics: dict[str, dict[str, str]] = field(default_factory=dict)  # cell → {row: error}, cell kept

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failed or self.failed_metrics else EXIT_OK


class Runner:
    """Runs one suite into one run folder. Build once, call :meth:`run`."""

    def __init__(
        self,
        suite: Suite,
        out: str | Path,
        *,
        device: str = "auto",
        batch_size: int | None = None,
        progress: bool = False,
        cache_dir: Path | None = None,
    ):
        self.suite = suite
        self.store = RunStore(out)
        self.dist: Dist
        self.dist, self.device = setup(device)  # under torchrun: join the job, cuda:LOCAL_RANK
        self.batch_size = batch_size or suite.batch_size
        self.progress = progress and self.dist.is_main
        self.cache_dir = cache_dir
        self.base_dir = Path(suite.file).parent if suite.file else Path.cwd()
        self._conditions: Conditions | None = None  # expanded on first use: a bad prompt file is a preflight problem
        self.tasks = RunTasks(suite, self.base_dir, self.batch_size)  # a task suite's sources, masks, controls
        self._env: dict[str, Any] | None = None
        self.models = ModelCache(self.device, self._on_model_built)
        self._extractors: dict[str, Extractor] = {}
        self.references = RunReferences(  # the reference set and training split (evalkit.run.reference_data)
            suite.reference, base_dir=self.base_dir, cache_dir=cache_dir, batch_size=self.batch_size, log=self.log
        )
        self.run_id = ""

    @property
    def conditions(self) -> Conditions:
        if self._conditions is None:
            sources = self.tasks.condition_sources()
            self._conditions = expand_conditions(self.suite.conditions, self.suite.samples, self.base_dir, **sources)
        return self._conditions

    def log(self, message: str) -> None:
        if self.progress:
            tqdm.write(message, file=sys.stderr)

    # -- parts built once per run ----------------------------------------------------------------
    def extractors(self) -> dict[str, Extractor]:
        if not self._extractors:
            for name in sorted({m.extractor for m in self.suite.metrics if m.extractor}):
                self._extractors[name] = build_extractor(name, device=self.device, **self.suite.extractor_options(name))
        return self._extractors

    def reference_features(self) -> dict[str, dict[str, np.ndarray]]:
        return self.references.features(self.extractors())

    def train_features(self) -> dict[str, dict[str, np.ndarray]] | None:
        return self.references.train_features(self.extractors())

    def adapter(self, cell: Cell) -> Adapter:
        return self.models.get(cell)

    def _on_model_built(self, model: str, info: dict[str, Any]) -> None:
        """Resume only onto cells made by the same weights: the suite (and so the cell hash) may name a
        model by path or by the built-in zoo while the files behind it were retrained."""

        def check() -> None:
            finished = [
                (c.cell_id, self.store.read_cell(c.cell_id) or {})
                for c in self.suite.cells()
                if c.model.name == model and self._is_done(c)
            ]
            stale = stale_cells(model, info, finished)
            if stale:
                first = next(iter(stale))
                raise ModelChangedError(
                    f"model {model!r} has other weights than when {len(stale)} finished cell(s) in "
                    f"{self.store.root} were computed (e.g. {first}): then {stale[first]}, now "
                    f"{weights_identity(info)}. Finished cells are kept; run into a new --out folder, or delete "
                    f"those cells' folders under {self.store.root / 'cells'} to recompute them"
                )

        self.dist.on_main(check)  # every rank builds here

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Run every pending cell. Only rank 0 locks and writes the run folder; all ranks generate."""
        summary = RunSummary(self.store.root)
        main = self.dist.is_main
        problems = self.dist.on_main(lambda: preflight(self.suite, base_dir=self.base_dir))  # before anything is built
        if problems:
            raise PreflightError(str(self.suite.file or self.suite.name), problems)
        with self.store if main else contextlib.nullcontext():
            cells = self.suite.cells()
            pending_ids = self.dist.on_main(lambda: self._plan(cells, summary))
            pending = [c for c in cells if c.cell_id in pending_ids]
            for cell in (bar := tqdm(pending, desc="cells", unit="cell", disable=not self.progress, file=sys.stderr)):
                bar.set_postfix_str(cell.cell_id)
                try:
                    self.run_cell(cell)
                    summary.done.append(cell.cell_id)
                except (KeyboardInterrupt, SystemExit, StoreError):  # the run folder itself failed
                    raise
                except Exception as e:  # one broken cell must not lose the others
                    if not main:
                        raise  # only rank 0 records failures (a rank's own errors travel in its shard)
                    self.store.write_failed_cell(cell.cell_id, self._cell_record(cell), traceback.format_exc())
                    summary.failed[cell.cell_id] = f"{type(e).__name__}: {e}"
                    self.log(f"  FAILED: {type(e).__name__}: {e}")
                if main:  # a killed run leaves the table of what finished
                    self._write_manifest(cells, summary)
                    self._write_results(cells, summary)
            summary = self.dist.on_main(lambda: self._finish(cells, summary))
        self.models.close()
        return summary

    def _plan(self, cells: list[Cell], summary: RunSummary) -> list[str]:
        """Rank 0: the cells still to do (resume), the manifest, the conditions, the reference features."""
        pending = [c for c in cells if not self._is_done(c)]
        summary.reused = [c.cell_id for c in cells if c not in pending]
        self._write_manifest(cells, summary)
        self._write_results(cells, summary)  # stamped with this config from the start
        self.store.write_conditions(self.conditions.labels, self.conditions.prompts)
        if self.tasks.inputs is not None:  # the sources, masks, controls and the sources' features
            self.store.write_task_inputs(self.tasks.stored(self.extractors()))
        if summary.reused:
            self.log(f"resuming: {len(summary.reused)} of {len(cells)} cells already done")
        if self.suite.reference and (pending or self.store.read_floors() is None):  # real-vs-real floor at this N
            ref = self.reference_features()
            cache = self.cache_dir or default_cache_dir()
            self.store.write_floors(suite_floors(self.suite, ref, self.references.info, self.extractors(), cache))
        return [c.cell_id for c in pending]

    def _finish(self, cells: list[Cell], summary: RunSummary) -> RunSummary:
        self._env = None  # the environment as the run ends (the machine's load)
        self._write_manifest(cells, summary)
        self._write_results(cells, summary)
        for cid in summary.reused + summary.done:
            errors = {r["metric"]: r["error"] for r in self.store.cell_rows(cid) if r.get("error")}
            if errors:
                summary.failed_metrics[cid] = errors
        return summary

    def _write_results(self, cells: list[Cell], summary: RunSummary) -> None:
        """results.parquet / .csv: every finished cell of every config run into this folder (run.json ``configs``),
        this config's as the run knows them; rewritten after each cell."""
        done = set(summary.reused + summary.done)
        mine = {c.cell_id: self.store.read_cell(c.cell_id) or {} for c in cells if c.cell_id in done}
        seen = finished_cells(self.store, self.store.read_manifest() or {}, mine)
        self.store.write_results(tidy_frame([r for cid in seen for r in self.store.cell_rows(cid)]))

    def _is_done(self, cell: Cell) -> bool:
        rec = self.store.read_cell(cell.cell_id)
        return bool(rec) and rec.get("cell_hash") == self.suite.cell_hash(cell) and self.store.is_done(cell.cell_id)

    def _cell_record(self, cell: Cell) -> dict[str, Any]:
        return cell_record(self.suite, cell, self.batch_size, self.device, self.dist.world_size)

    def _write_manifest(self, cells: list[Cell], summary: RunSummary) -> None:
        """run.json: this config (the folder's current one), and every config seen in the folder (``configs``)."""
        old = self.store.read_manifest() or {}
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        env = self._env = self._env or environment(self.device)
        failed = sum(1 for c in cells if (self.store.read_cell(c.cell_id) or {}).get("status") == "failed")
        done = len(summary.reused) + len(summary.done)
        listed = [{**c.describe(), "cell_hash": self.suite.cell_hash(c)} for c in cells]
        entry = {"suite": self.suite.name, "config": self.suite.to_config(), "cells": listed}
        configs = record_config(old, self.suite.config_hash(), entry, now)
        self.run_id = old.get("run_id") or f"{self.suite.name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
        self.store.write_manifest(
            {
                "run_id": self.run_id,
                "suite": self.suite.name,
                "suite_file": self.suite.file,
                "description": self.suite.description,
                "config": self.suite.to_config(),
                "config_hash": self.suite.config_hash(),
                "created_at": old.get("created_at", now),
                "updated_at": now,
                "evalkit_version": evalkit.__version__,
                "git_commit": env["evalkit_git_commit"],
                "environment": env,
                "batch_size": self.batch_size,
                "world_size": self.dist.world_size,
                "cells": listed,
                "models": {**old.get("models", {}), **self.models.all_info()},
                "reference": self.references.info or old.get("reference"),
                "extractors": {n: _extractor_record(e) for n, e in self._extractors.items()}
                or old.get("extractors", {}),
                "status": {"done": done, "failed": failed, "total": len(cells)},
                "configs": configs,
            }
        )

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
            except Exception:
                shard = Shard(mine, {}, NO_IMAGES, error=traceback.format_exc())
            shards = self.dist.gather(shard)
            if not self.dist.is_main:
                return
            errors = [f"rank {r}:\n{s.error}" for r, s in enumerate(shards) if s.error]
            if errors:
                raise RunError(
                    f"cell {cell.cell_id} failed on {len(errors)} of {len(shards)} ranks\n" + "\n".join(errors)
                )
        self._score_and_write(cell, indices, shards)

    def _request(self, cell: Cell, idx: np.ndarray) -> GenerationRequest:
        lab, pr = self.conditions.take(idx)
        return GenerationRequest(
            indices=idx,
            seed=cell.seed,
            sampler=cell.sampler.name,
            steps=cell.steps,
            guidance=cell.guidance,
            batch_size=self.batch_size,
            sampler_options=cell.sampler.options,
            labels=lab,
            prompts=pr,
            device=self.device,
            **cell.guidance_method.request_fields(),
            **self.tasks.request_fields(cell, idx),
        )

    def _generate(self, cell: Cell, mine: np.ndarray) -> Shard:
        adapter = self.adapter(cell)
        return generate_shard(
            adapter,
            self.extractors(),
            cell,
            mine,
            request=lambda idx: self._request(cell, idx),
            warm_up=self.models.needs_warmup(cell),
            keep=min(self.suite.grid_samples, cell.n),
            device=self.device,
            batch_size=self.batch_size,
            timing=self.suite.timing,
            progress=self.progress,
            crops=self._crop_extractors(),
        )

    def _crop_extractors(self) -> dict[str, Extractor]:
        """The extractors some metric reads on masked crops, by their ``<name>@masked`` names (the same networks)."""
        return {f"{n}{MASKED}": self.extractors()[n] for n in self.tasks.crop_extractors()}

    def _score_and_write(self, cell: Cell, indices: np.ndarray, shards: list[Shard]) -> None:
        """Rank 0: join the shards in sample order, compute the metrics and cost rows, write the cell."""
        t_start = time.perf_counter()
        shards = [s for s in shards if len(s.indices)]
        if not np.array_equal(np.concatenate([s.indices for s in shards]), indices):
            raise RunError(f"cell {cell.cell_id}: the shards do not cover samples 0..{cell.n - 1} in order")
        features = {k: np.concatenate([s.features[k] for s in shards]) for k in shards[0].features}
        labels, prompts = self.conditions.take(indices)
        add_text_embeddings(features, {**self.extractors(), **self._crop_extractors()}, prompts)

        t_metrics = time.perf_counter()
        extras: dict[str, Any] = {}  # each row's plain extra (e.g. memorisation's closest pairs), kept in cell.json
        rows = score(
            self.suite.metrics,
            features,
            self.reference_features(),
            self.extractors(),
            train=self.train_features(),
            labels=labels,
            prompts=prompts,
            seed=cell.seed,
            extras=extras,
            task=self.tasks.metric_inputs(cell, indices, self.extractors()),
        )
        metrics_s = time.perf_counter() - t_metrics
        cost = costs(shards)
        rows += cost_rows(shards, cost)
        rows = [self._row(cell, r, cost) for r in rows]
        keep = min(self.suite.grid_samples, cell.n)
        shown = np.concatenate([s.kept for s in shards if len(s.kept)])[:keep]
        samples = {
            "images": shown,
            "indices": indices[:keep],
            "labels": labels[:keep] if labels is not None else np.full(keep, -1, dtype=np.int64),
        }
        if prompts is not None:
            samples["prompts"] = np.array(prompts[:keep])
        timings = phase_seconds(shards, metrics_s=metrics_s, scoring_s=time.perf_counter() - t_start)
        timing = timing_record(shards, self.suite.timing)
        for warning in timing["warnings"]:
            self.log(f"  WARNING {cell.cell_id}: {warning}")
        record = {
            **self._cell_record(cell),
            **cost,
            "peak_rss_mb": max(s.peak_rss_mb for s in shards),
            "timings": timings,
            "timing": timing,
            "schedule": next((s.schedule for s in shards if s.schedule), None),
            "model_info": self.adapter(cell).info(),
            **({"metric_extras": extras} if extras else {}),
        }
        if len(shards) > 1:
            record["ranks"] = [
                {"n": len(s.indices), "generate_s": s.generate_s, "extract_s": s.extract_s, "peak_mem_mb": s.peak_mb}
                for s in shards
            ]
        self.store.write_cell(
            cell.cell_id, record, features=features, rows=rows, grid_png=grid_png(shown), samples=samples
        )

    def _row(self, cell: Cell, partial: dict[str, Any], cost: dict[str, float]) -> dict[str, Any]:
        return result_row(self.run_id, self.suite, cell, partial, cost, self.device)


def _extractor_record(e: Extractor) -> dict[str, Any]:
    """run.json's record of an extractor: weights id, mode and, where it has one, where its resize ran."""
    resize = getattr(e, "resize", None)
    return {"weights_id": e.weights_id, "mode": e.mode, **({"resize": resize} if resize else {})}
