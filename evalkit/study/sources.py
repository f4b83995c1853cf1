"""What a task cell's metrics compared its samples with, read back from the run folder, for the comparisons made
after the run (replicates, the gate's paired CIs and sampling σ).

In a task suite a metric that reads the source (``MetricDef.reads_source``: psnr, ssim, lpips_paired,
control_fidelity) scores sample ``i`` against its own source ``i mod S``, mask and control, and a reference
metric among them (psnr, ...) uses the *source* where other suites use reference image ``i``. A comparison must
do the same, never fall back on the reference: where the run folder does not hold what the metric read, the
comparison has no replicates (and says why) instead of replicates of another quantity.

The run folder's ``task_inputs.npz`` (:meth:`evalkit.store.RunData.task_inputs`) holds the sources (``images``),
``masks``, ``control`` and source ``labels``; the sources' features on each extractor are read from its keys
``source/<extractor>/<output>`` (one row per source) where the run stored them. The sources' fingerprint (a
digest of those inputs) tells runs on other source images apart: their samples are not the same draws, and a
metric compared with the source is not the same measurement on them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from evalkit.metrics.base import MetricDef
from evalkit.store import RunData, split_features
from evalkit.suite.task_spec import detector_spec
from evalkit.suite.tasks import TASKS

SOURCE_PREFIX = "source/"  # task_inputs.npz keys of the sources' features: source/<extractor>/<output>
INPUT_KEYS = ("images", "masks", "control", "labels")  # what the fingerprint covers


def is_task_run(run: RunData) -> bool:
    """Was the run made by a suite with ``task`` (its cells image-conditioned)?"""
    config = run.manifest.get("config")
    return isinstance(config, dict) and bool(config.get("task"))


def compares_with_source(defn: MetricDef, task_run: bool) -> bool:
    """In a task run, a metric that reads the source scores each sample against its own source, mask or control."""
    return task_run and bool(getattr(defn, "reads_source", False))


def uses_reference(defn: MetricDef, task_run: bool) -> bool:
    """Does the metric read the reference set here (a source-reading metric in a task run reads the source)?"""
    return bool(defn.needs_reference) and not compares_with_source(defn, task_run)


def needs_source_features(defn: MetricDef, task_run: bool) -> bool:
    """Does it read the sources' features (psnr, ssim, lpips_paired in a task run: the source stands in for the
    reference), not only the masks or controls (control_fidelity)?"""
    return compares_with_source(defn, task_run) and bool(defn.needs_reference)


def fingerprint(arrays: dict[str, np.ndarray]) -> str:
    """A digest of a task's inputs (sources, masks, controls, labels; not the features stored beside them)."""
    h = hashlib.sha256()
    for key in INPUT_KEYS:
        if key in arrays:
            a = np.ascontiguousarray(arrays[key])
            h.update(f"{key}:{a.dtype.str}{a.shape}".encode())
            h.update(memoryview(a).cast("B"))
    return h.hexdigest()[:16]


class RunSources:
    """A run's task inputs, read once: fingerprint, the sources' stored features and each metric's inputs."""

    def __init__(self, run: RunData) -> None:
        self.run = run
        self._arrays: dict[str, np.ndarray] | None = None
        self._fingerprint: str | None = None

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """task_inputs.npz ({} for a run without a task); a corrupt file is the store's StoreError."""
        if self._arrays is None:
            self._arrays = dict(self.run.task_inputs() or {}) if is_task_run(self.run) else {}
        return self._arrays

    @property
    def fingerprint(self) -> str:
        """:func:`fingerprint` of the run's task inputs ("" for a run without a task)."""
        if self._fingerprint is None:
            self._fingerprint = fingerprint(self.arrays) if self.arrays else ""
        return self._fingerprint

    def count(self) -> int:
        """S, the number of sources (0 without them)."""
        return len(self.arrays["images"]) if "images" in self.arrays else 0

    def features(self) -> dict[str, dict[str, np.ndarray]]:
        """The sources' features the run stored, ``{extractor: {output: (S, ...)}}`` ({} where it stored none)."""
        flat = {k[len(SOURCE_PREFIX) :]: v for k, v in self.arrays.items() if k.startswith(SOURCE_PREFIX)}
        return split_features(flat)

    def control_spec(self) -> dict[str, Any] | None:
        """The detector that made the controls, as the run gave it to the metrics (None: files naming none)."""
        return detector_spec(((self.run.manifest.get("config") or {}).get("conditions") or {}).get("control"))

    def metric_fields(
        self, extractor: str, n: int, source: dict[str, np.ndarray] | None = None, *, task: str | None = None
    ) -> dict[str, Any]:
        """The :class:`~evalkit.metrics.base.MetricInputs` task fields of samples 0..n-1 (sample i: source i mod S):
        ``source`` (the sources' features on ``extractor``: ``source`` if given, else the run's stored ones; None
        where there are none), ``mask``, ``control``, ``control_spec`` — the last three where the cell's ``task``
        reads them (an img2img cell of a suite that also inpaints has no mask: :data:`evalkit.suite.tasks.TASKS`)."""
        s = self.count()
        if s == 0:
            return {"source": None, "mask": None, "control": None, "control_spec": None}
        rows = np.arange(int(n)) % s
        feats = source if source is not None else self.features().get(extractor)
        needs = TASKS[task].needs if task in TASKS else ("masks", "control")
        masks = self.arrays.get("masks") if "masks" in needs else None
        control = self.arrays.get("control") if "control" in needs else None
        return {
            "source": None if feats is None else {k: np.asarray(v)[rows] for k, v in feats.items()},
            "mask": None if masks is None else masks[rows],
            "control": None if control is None else control[rows],
            "control_spec": self.control_spec() if control is not None else None,
        }
