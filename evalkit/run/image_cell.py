"""The one cell of ``evalkit score``: images that already exist, scored as ``evalkit run`` scores a generated cell.

The images are read by the reference-set reader (:func:`evalkit.references.open.open_images`: a folder, zip, tar or
``.npz``, decoded by the rules of :mod:`evalkit.references.sources`) and pass once through every extractor, in batches
of the run's batch size, as the runner streams an adapter's batches: the same networks on the same uint8 batches give
the same features, bit for bit. From there the :class:`~evalkit.run.runner.Runner` takes over unchanged (its own
scoring, rows, cell record, features, samples, grid, results table, noise floors and manifest), so ``evalkit
report`` and ``evalkit check`` read the folder like any run. Only generation differs: nothing is generated or timed,
so model calls and NFE are 0 and the timing rows NaN.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from evalkit.errors import RunError
from evalkit.features.base import Extractor, extract
from evalkit.generate import Adapter, GenerationRequest
from evalkit.references import ReferenceSet
from evalkit.references.sources import DECODING
from evalkit.run.cell import Shard
from evalkit.run.runner import Runner
from evalkit.run.timing import PeakMemory, Stopwatch
from evalkit.suite import Cell, Suite

IMAGES_ADAPTER = "evalkit.run.image_cell:images_model"  # the "adapter" a score run records for its images
SAMPLER = "images"  # the sampler label of a score cell: cell id <name>__images__s0__g0


class ImagesModel(Adapter):
    """What a score run records as its model: where the images came from and how they were read. It generates
    nothing (``evalkit score`` reads the images itself); to run existing images inside a suite, use the ``images``
    adapter."""

    name = "images"

    def __init__(self, path: str = "", sha256: str = "", images: ReferenceSet | None = None) -> None:
        self.path, self.sha256, self.images = path, sha256, images

    def generate(self, request: GenerationRequest) -> Any:
        raise RunError(
            f"{self.path}: these images were scored by `evalkit score`, which reads them itself; to use existing "
            "images in a suite, use the 'images' adapter"
        )

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"adapter": "images", "path": self.path, "images_sha256": self.sha256}
        if self.images is not None:
            out.update({k: v for k, v in self.images.describe().items() if k in ("source", "array", "shape")})
            out["n"] = len(self.images)
            out["decoding"] = DECODING
            skipped = {**getattr(self.images, "unreadable", {}), **self.images.undecodable}
            if skipped:
                out["skipped"] = skipped
        return out


def images_model(*, device: str = "cpu", path: str = "", sha256: str = "") -> ImagesModel:
    """The factory a score run's config names (:data:`IMAGES_ADAPTER`)."""
    return ImagesModel(path, sha256)


class ScoreRunner(Runner):
    """A :class:`Runner` whose one cell reads ``images`` instead of generating: :func:`read_shard` (or the shard
    given) stands in for the adapter's stream; everything after it is the runner's own."""

    def __init__(self, suite: Suite, out: str | Path, *, images: ReferenceSet, shard: Shard | None = None, **kw: Any):
        super().__init__(suite, out, **kw)
        (model,) = suite.models
        self.images, self.shard = images, shard
        self.model = ImagesModel(str(model.options.get("path", "")), str(model.options.get("sha256", "")), images)
        self.models.info[model.name] = self.model.info()  # run.json "models"

    @property
    def cell(self) -> Cell:
        (cell,) = self.suite.cells()
        return cell

    def cell_done(self) -> bool:
        """The run folder already holds this cell, finished, for these images, metrics and reference."""
        return self._is_done(self.cell)

    def adapter(self, cell: Cell) -> Adapter:
        return self.model

    def _generate(self, cell: Cell, mine: np.ndarray) -> Shard:
        if self.shard is None:
            keep = min(self.suite.grid_samples, cell.n)
            _, prompts = self.conditions.take(mine)
            self.shard = read_shard(
                self.images,
                self.extractors(),
                batch_size=self.batch_size,
                keep=keep,
                device=self.device,
                prompts=prompts,
            )
        if not np.array_equal(self.shard.indices, mine):
            raise RunError(f"{self.model.path}: read {len(self.shard.indices)} images, the cell expects {len(mine)}")
        return self.shard


def read_shard(
    images: ReferenceSet,
    extractors: dict[str, Extractor],
    *,
    batch_size: int,
    keep: int,
    device: str = "cpu",
    check: Callable[[dict[str, np.ndarray]], None] | None = None,
    progress: bool = False,
    prompts: list[str] | None = None,
) -> Shard:
    """Every image of ``images`` through every extractor once (batches of ``batch_size``, never mixing sizes), the
    first ``keep`` images kept for the grid; ``check`` sees the first batch's features (e.g. their dimensions);
    ``prompts`` (one per image, in order) go to extractors that score images against them."""
    parts: dict[str, list[np.ndarray]] = {}
    kept: list[torch.Tensor] = []
    n = 0
    read, extracting = Stopwatch("cpu"), Stopwatch(device)
    stream = images.iter_batches(batch_size)
    bar = tqdm(total=len(images), desc="  images", unit="image", leave=False, disable=not progress, file=sys.stderr)
    with PeakMemory(device) as mem, bar:
        while True:
            with read.measure():
                batch = next(stream, None)
            if batch is None:
                break
            with extracting.measure():
                texts = prompts[n : n + len(batch)] if prompts is not None else None
                for name, ex in extractors.items():
                    for out, arr in extract(ex, batch, texts).items():
                        parts.setdefault(f"{name}/{out}", []).append(np.asarray(arr))
            if check is not None and n == 0:
                check({k: v[0] for k, v in parts.items()})
            if n < keep:
                kept.append(batch[: keep - n])
            n += len(batch)
            bar.update(len(batch))
    if n == 0:
        raise RunError(f"no image of {images.name} could be decoded")
    features = {k: np.concatenate(v) for k, v in parts.items()}
    shard = Shard(np.arange(n, dtype=np.int64), features, _same_size(kept), generate_s=read.seconds)
    shard.extract_s, shard.peak_mb, shard.peak_rss_mb = extracting.seconds, mem.peak_mb, mem.peak_rss_mb
    shard.measured = False  # reading files is no generation: no cost is measured (the cost rows say unknown)
    shard.model_calls = shard.nfe = None  # and whatever made the images, its model calls are unknown here
    return shard


def _same_size(kept: list[torch.Tensor]) -> np.ndarray:
    """The kept images as one uint8 array (grid and samples.npz); images of another size than the first are
    resized to it (antialiased bilinear) for display only — their features were computed as stored."""
    if not kept:
        return np.zeros((0, 3, 1, 1), np.uint8)
    h, w = kept[0].shape[-2:]
    same = []
    for k in kept:
        if k.shape[-2:] != (h, w):
            k = torch.nn.functional.interpolate(k.float(), size=(h, w), mode="bilinear", antialias=True)
            k = k.round().clamp(0, 255).to(torch.uint8)
        same.append(k)
    return torch.cat(same).numpy()
