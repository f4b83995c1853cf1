"""A task suite's inputs, loaded once per run: the source images, their masks and control maps, and the features
of the sources on every extractor of the suite (one pass, shared by every cell).

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
from evalkit.features.base import Extractor, extract
from evalkit.imageops.detectors import detect
from evalkit.imageops.masks import binarize, make_masks
from evalkit.references import open_reference
from evalkit.references.open import open_images


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

    def for_request(self, indices: np.ndarray) -> dict[str, Any]:
        """The GenerationRequest fields of samples ``indices``: their source, mask and control as uint8 tensors."""
        src = self.sources(indices)
        out: dict[str, Any] = {"images": torch.from_numpy(self.images[src])}
        for key in ("masks", "control"):
            arr = getattr(self, key)
            out[key] = None if arr is None else torch.from_numpy(arr[src])
        return out

    def for_metrics(self, indices: np.ndarray) -> dict[str, Any]:
        """The MetricInputs fields of samples ``indices``: mask, control and the detector that made it."""
        src = self.sources(indices)
        return {
            "mask": None if self.masks is None else self.masks[src],
            "control": None if self.control is None else self.control[src],
            "control_spec": self.control_spec,
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
        detector = {k: v for k, v in control_spec.items() if k not in ("path", "strict")}
        if "path" in control_spec:
            inputs.control = _read_given("conditions.control", control_spec, base_dir, len(images), None)
        else:
            inputs.control = _detected(detector, images)
        inputs.control_spec = detector or None
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


def source_features(
    inputs: TaskInputs, extractors: dict[str, Extractor], batch_size: int
) -> dict[str, dict[str, np.ndarray]]:
    """Every extractor's outputs on the source images, once per run: ``{extractor: {output: (S, ...)}}``."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, ex in extractors.items():
        parts: dict[str, list[np.ndarray]] = {}
        for s in range(0, len(inputs), batch_size):
            for key, arr in extract(ex, torch.from_numpy(inputs.images[s : s + batch_size])).items():
                parts.setdefault(key, []).append(np.asarray(arr))
        out[name] = {k: np.concatenate(v) for k, v in parts.items()}
    return out


def aligned(features: dict[str, dict[str, np.ndarray]], inputs: TaskInputs, indices: np.ndarray) -> dict[str, Any]:
    """Per extractor, its source outputs for samples ``indices`` (row k = sample k's source)."""
    src = inputs.sources(indices)
    return {name: {k: v[src] for k, v in outs.items()} for name, outs in features.items()}
