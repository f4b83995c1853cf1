"""A task suite's inputs, loaded once per run: the source images, their masks and control maps, and the features
of the sources on every extractor of the suite (one pass, shared by every cell). :class:`RunTasks` is the runner's
task side, as :class:`~evalkit.run.reference_data.RunReferences` is its reference side.

``region: masked`` on a metric that does not compare sample with source (``fd``, ``kid``, ``clip_score``, ...) scores
the regenerated region: its extractor also runs on each output cropped to its mask's bounding box
(:func:`evalkit.imageops.masks.mask_crops`), under the name ``<extractor>@masked``, and the reference is the same
crops of the sources (what the region held before).

Sample ``i`` of every cell uses source ``i mod n``, so its image, mask and control never depend on the batch size,
the shard or the resume point. Generated masks are seeded per source index (:mod:`evalkit.imageops.masks`);
detected controls are computed per image (:mod:`evalkit.imageops.detectors`). All live in memory: a task's source
set is the size of an evaluation set (1000 sources at 512 px: 0.8 GB of uint8).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.errors import ConfigError, EvalkitError
from evalkit.features.base import Extractor
from evalkit.imageops.detectors import detect
from evalkit.imageops.masks import binarize, make_masks, mask_crops
from evalkit.metrics.base import get_metric
from evalkit.references import open_reference
from evalkit.references.cache import reference_features
from evalkit.references.open import open_images
from evalkit.references.sets import ArrayReference
from evalkit.run.scoring import MASKED
from evalkit.store import join_features
from evalkit.suite import THROUGHPUT, Cell, Suite
from evalkit.suite.task_spec import detector_spec
from evalkit.suite.tasks import TASKS, reads_crops


@dataclass
class TaskInputs:
    images: np.ndarray  # uint8 (S, 3, H, W)
    labels: np.ndarray | None = None  # per source (a dataset's class labels)
    prompts: list[str] | None = None  # per source (captions beside the image files)
    masks: np.ndarray | None = None  # uint8 (S, 1, H, W), 1 = generate
    control: np.ndarray | None = None  # uint8 (S, 3, h, w)
    control_spec: dict[str, Any] | None = None  # {"detector": name, **options}; None: given as files, unknown
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.images)

    def sources(self, indices: np.ndarray) -> np.ndarray:
        return np.asarray(indices, dtype=np.int64) % len(self)

    def for_request(self, task: str, indices: np.ndarray) -> dict[str, Any]:
        """The GenerationRequest fields of samples ``indices``: their source, and the mask and control where ``task``
        reads them (an img2img cell of a suite that also inpaints gets no mask), as uint8 tensors."""
        src, needs = self.sources(indices), TASKS[task].needs
        out: dict[str, Any] = {"images": torch.from_numpy(self.images[src])}
        for key in ("masks", "control"):
            arr = getattr(self, key)
            out[key] = None if arr is None or key not in needs else torch.from_numpy(arr[src])
        return out

    def for_metrics(self, task: str, indices: np.ndarray) -> dict[str, Any]:
        """The MetricInputs fields of samples ``indices``: mask, control and its detector, where ``task`` reads them."""
        src, needs = self.sources(indices), TASKS[task].needs
        return {
            "mask": None if self.masks is None or "masks" not in needs else self.masks[src],
            "control": None if self.control is None or "control" not in needs else self.control[src],
            "control_spec": self.control_spec if "control" in needs else None,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """What the run folder keeps for the report's task view."""
        out = {"images": self.images}
        for key in ("masks", "control", "labels"):
            if getattr(self, key) is not None:
                out[key] = np.asarray(getattr(self, key))
        return out


def open_task_inputs(conditions: dict[str, Any] | None, base_dir: Path) -> TaskInputs | None:
    """The task inputs ``conditions`` names (None for a suite without ``conditions.images``). Errors name the field."""
    if not conditions or "images" not in conditions:
        return None
    images, labels, prompts, info = _read_sources(conditions["images"], base_dir)
    size = images.shape[2:]
    inputs = TaskInputs(images, labels, prompts, info={"images": info})
    mask_spec = conditions.get("masks")
    if mask_spec is not None:
        if "path" in mask_spec:
            inputs.masks = binarize(_read_given("conditions.masks", mask_spec, base_dir, len(images), size))
        else:
            inputs.masks = make_masks(mask_spec, np.arange(len(images)), (int(size[0]), int(size[1])))
        inputs.info["masks"] = mask_spec
    control_spec = conditions.get("control")
    if control_spec is not None:
        detector = detector_spec(control_spec)
        if "path" in control_spec:
            inputs.control = _read_given("conditions.control", control_spec, base_dir, len(images), None)
        else:
            inputs.control = _detected(detector or {}, images)
        inputs.control_spec = detector
        inputs.info["control"] = control_spec
    return inputs


def _read_sources(spec: dict[str, Any], base: Path) -> tuple[np.ndarray, np.ndarray | None, list[str] | None, dict]:
    try:
        ref = open_reference(spec, base_dir=base)
        batches = [b.numpy() for b in ref.iter_batches(256)]
    except (EvalkitError, OSError) as e:
        raise ConfigError(f"conditions.images: {e}") from e
    shapes = sorted({b.shape[1:] for b in batches})
    if len(shapes) != 1:
        raise ConfigError(f"conditions.images: the source images must share one size; got {shapes[:4]}")
    images = np.concatenate(batches)
    prompts = source_captions(ref)
    return images, ref.labels, prompts if prompts is None or len(prompts) == len(images) else None, ref.describe()


def source_captions(ref: Any) -> list[str] | None:
    """Each source file's caption (``key.txt`` beside ``key.png``), in the images' order; None unless all have one."""
    if not callable(getattr(ref, "prompts", None)) or not hasattr(ref, "files"):
        return None
    captions, files = ref.prompts(), ref.files
    listed = [captions.get(f) for f in files]
    return listed if listed and all(p is not None for p in listed) else None


def _read_given(field_: str, spec: dict[str, Any], base: Path, n: int, size: Any) -> np.ndarray:
    """Masks or control maps given as files: one per source, in the same (natural) order, of the source's size."""
    path = Path(spec["path"]).expanduser()
    path = path if path.is_absolute() else base / path
    try:
        ref = open_images(path, strict=bool(spec.get("strict", False)), role=field_)
        arr = np.concatenate([b.numpy() for b in ref.iter_batches(256)])
    except (EvalkitError, OSError, ValueError) as e:
        raise ConfigError(f"{field_}.path: {e}") from e
    if len(arr) != n:
        raise ConfigError(f"{field_}.path: {path} holds {len(arr)} images; expected one per source image ({n})")
    if size is not None and tuple(arr.shape[2:]) != tuple(size):
        got, want = "×".join(map(str, arr.shape[2:])), "×".join(map(str, size))
        raise ConfigError(f"{field_}.path: images of {got} px; expected the source images' size {want}")
    return arr


def _detected(spec: dict[str, Any], images: np.ndarray) -> np.ndarray:
    try:
        return detect(spec, images)
    except (EvalkitError, ValueError) as e:
        raise ConfigError(f"conditions.control: {e}") from e


class RunTasks:
    """What a task suite's run reads once and hands each cell: inputs, source features, request and metric fields."""

    def __init__(self, suite: Suite, base_dir: Path, batch_size: int) -> None:
        self.suite, self.base_dir, self.batch_size = suite, base_dir, batch_size
        self._inputs: TaskInputs | None = None
        self._features: dict[str, dict[str, np.ndarray]] | None = None

    @property
    def inputs(self) -> TaskInputs | None:
        if self._inputs is None and self.suite.task:
            self._inputs = open_task_inputs(self.suite.conditions, self.base_dir)
        return self._inputs

    def condition_sources(self) -> dict[str, Any]:
        """What :func:`evalkit.suite.expand_conditions` takes from the sources (labels, captions)."""
        tasks = self.inputs
        return {} if tasks is None else {"source_labels": tasks.labels, "source_prompts": tasks.prompts}

    def crop_extractors(self) -> list[str]:
        """Extractors some metric reads on masked crops (``region: masked`` on a metric that is not source-paired)."""
        if self.inputs is None or self.inputs.masks is None:
            return []
        return sorted({m.extractor for m in self.suite.metrics if m.extractor and is_crop_metric(m.name, m.options)})

    def request_fields(self, cell: Cell, indices: np.ndarray) -> dict[str, Any]:
        if cell.task is None or self.inputs is None:
            return {}
        return {**cell.task.request_fields(), **self.inputs.for_request(cell.task.task, indices)}

    def features(self, extractors: dict[str, Extractor]) -> dict[str, dict[str, np.ndarray]]:
        """Every extractor's outputs on the sources, and on their masked crops where a metric reads them (once)."""
        if self._features is None:
            tasks = self.inputs
            self._features = {}
            if tasks is not None:
                self._features = _one_pass(tasks.images, extractors, self.batch_size)
                crops = {n: extractors[n] for n in self.crop_extractors()}
                if crops and tasks.masks is not None:
                    cropped = _one_pass(mask_crops(tasks.images, tasks.masks), crops, self.batch_size)
                    self._features.update({f"{n}{MASKED}": f for n, f in cropped.items()})
        return self._features

    def stored(self, extractors: dict[str, Extractor]) -> dict[str, np.ndarray]:
        """What the run folder keeps (``task_inputs.npz``): the inputs, and the sources' features as
        ``source/<extractor>/<output>`` (one row per source: what studies and the gate pair samples with)."""
        assert self.inputs is not None
        feats = self.features(extractors)
        return {**self.inputs.arrays(), **{f"source/{k}": v for k, v in join_features(feats).items()}}

    def metric_inputs(self, cell: Cell, indices: np.ndarray, extractors: dict[str, Extractor]) -> dict[str, Any] | None:
        """A task cell's per-sample source features, masks and controls for the metrics (None without a task);
        ``source_sets``: the sources' features unaligned (a masked-crop metric's reference)."""
        tasks = self.inputs
        if tasks is None or cell.task is None:
            return None
        feats = self.features(extractors)
        src = tasks.sources(indices)
        aligned = {name: {k: v[src] for k, v in outs.items()} for name, outs in feats.items()}
        return {"source": aligned, "source_sets": feats, **tasks.for_metrics(cell.task.task, indices)}


def is_crop_metric(name: str, options: dict[str, Any]) -> bool:
    """``region: masked`` on a metric that does not pair samples with sources: it reads masked crops."""
    return name != THROUGHPUT and reads_crops(options, get_metric(name).reads_source)


def _one_pass(images: np.ndarray, extractors: dict[str, Extractor], batch_size: int) -> dict[str, dict]:
    """The reference sets' one pass (:func:`evalkit.references.cache.reference_features`, uncached) over in-memory
    images: every extractor fed each batch once; ``{name: {output: (S, ...)}}`` by this dict's names."""
    got = reference_features(
        ArrayReference("sources", images), extractors.values(), batch_size=batch_size, use_cache=False
    )
    return {name: got[ex.name] for name, ex in extractors.items()}
