"""A task suite's sources in the gate: what a baseline records of them and what a check compares with.

In a task suite a metric that reads the source (psnr, ssim, lpips_paired, control_fidelity) scores sample ``i``
against its own source ``i mod S`` (:mod:`evalkit.study.sources`). So a baseline of a task suite records the
sources' fingerprint (``Baseline.sources``; a check of a run on other source images is refused, as one against
another reference is) and keeps the sources' features in its sidecar (``source/<extractor>/<output>``, one row
per source) where the run folder stored them. The paired CI and the sampling σ of such a metric are made with the
sources, never the reference; where either side lacks the sources' features there is no paired CI (the
tolerance judges alone) and no sampling σ (the seed-set σ stands), never one of another quantity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evalkit.errors import StoreError
from evalkit.metrics.base import MetricDef
from evalkit.store import RunData, join_features
from evalkit.study.sources import RunSources, is_task_run, needs_source_features, uses_reference

SIDECAR_PREFIX = "source/"  # the baseline sidecar's keys of the sources' features: source/<extractor>/<output>
Fields = dict[str, Any]  # MetricInputs task fields: source, mask, control, control_spec


def sources_record(run: RunData) -> dict[str, Any] | None:
    """What a baseline records of a task run's sources (fingerprint, count); None for a run without a task."""
    if not is_task_run(run):
        return None
    sources = RunSources(run)
    return {"fingerprint": sources.fingerprint, "count": sources.count()}


def sidecar_arrays(run: RunData) -> dict[str, np.ndarray]:
    """The sources' features the run stored, as sidecar arrays ({} for a run without them)."""
    if not is_task_run(run):
        return {}
    return {SIDECAR_PREFIX + k: np.asarray(v) for k, v in join_features(RunSources(run).features()).items()}


def sources_problems(recorded: dict[str, Any] | None, run: RunData) -> list[str]:
    """Why the run's sources are not the baseline's (empty: they are, or neither has a task)."""
    if recorded is None:
        return []
    try:
        now = sources_record(run)
    except (StoreError, OSError, KeyError, ValueError) as e:  # a corrupt task_inputs.npz
        return [f"run {run.root}: its task inputs cannot be read ({e})"]
    if now is None or now["fingerprint"] != recorded.get("fingerprint"):
        return [
            "task sources (conditions.images, masks, control) differ from the baseline's: the samples are not the "
            "same draws and metrics compared with the sources measure other pairs; re-make the baseline"
        ]
    return []


def task_arm(
    run: RunData,
    defn: MetricDef,
    extractor: str,
    n: int,
    source: dict[str, np.ndarray] | None = None,
    *,
    cell: str | None = None,
) -> Fields | None:
    """The task fields of one arm (the run's samples 0..n-1 of ``cell``, whose task says whether it reads masks and
    controls; ``source``: the sources' features to use instead of the run's own, e.g. the baseline's sidecar): {}
    for a run without a task; None where the metric compares with the sources and there are no features of them."""
    if not is_task_run(run):
        return {}
    task = (run.cells.get(cell) or {}).get("task") if cell else None
    fields = RunSources(run).metric_fields(extractor, n, source, task=task)
    return None if needs_source_features(defn, True) and fields["source"] is None else fields


def reference_for(defn: MetricDef, run: RunData, reference: dict[str, np.ndarray] | None) -> Any:
    """The reference features an arm reads: None for a metric that compares with the sources of a task run."""
    return reference if uses_reference(defn, is_task_run(run)) else None
