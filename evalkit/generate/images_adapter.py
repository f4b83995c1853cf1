"""``adapter: images``: score images made elsewhere (ComfyUI, A1111, in-house serving) as if evalkit had made them.

Everything evalkit reports — tables, Pareto plots, the HTML report, the CI gate — then applies to them. The
images are listed by a manifest (CSV, JSONL or parquet: a ``path`` column and any of ``model``, ``sampler``,
``steps``, ``guidance``, ``index``, ``seed``, ``prompt``, ``class``, ``nfe``, ``model_calls``, ``seconds``,
``cost``) or laid out as folders ``model/sampler/steps/guidance/*.png``
(:mod:`evalkit.suite.image_table` reads both)::

    name: comfy
    models:
      - {name: mine, adapter: images, options: {manifest: runs.csv}}
    samples: 200                     # per cell: the first 200 images of each
    conditions: {classes: 10}        # or left out: taken from the manifest's class / prompt column
    reference: {path: real/}
    metrics: [fd, kid, throughput]

**How the grid is declared**: not at all. With every model an images model the suite may leave out ``samplers``,
``steps`` and ``guidance``; they are filled from the manifest, a model per manifest model, an ``only`` entry per
cell the manifest has when it is no full cross product (:mod:`evalkit.suite.image_grid`, run by the suite
validator). Sampler names are the manifest's free labels (``dpmpp_2m_karras_comfy``), not evalkit samplers:
the adapter samples nothing, so its ``family`` is None and no sampler is looked up. Listing the axes instead
selects cells from the manifest. Every images cell is checked when the suite loads (exit 2): at least
``samples`` images, one per sample index, the manifest's ``class``/``prompt`` equal to the suite's condition of
each sample; a missing file, a bad value or a near-miss column name (``guidence``) is named with its line.

**Which image is sample i**: the one with ``index`` i; else the i-th by ``seed`` (cells made with the same seeds
pair up as evalkit's own do); else the i-th in manifest order, or by file name (natural order) in a folder.

**Cost**: ``seconds`` and ``cost`` per image go into :attr:`GeneratedBatch.reported_seconds` / ``cost``; the
cost rows show them marked ``cost_source: reported`` (``s_per_image`` their median, ``cost_per_image`` the mean
cost). ``nfe`` / ``model_calls`` columns are reported counts; without them those rows are NaN, never guessed.
evalkit's own clock would time file reads, so the adapter sets :attr:`measures_cost` False: no timing batches, no
measured seconds or memory.

**Reading**: :func:`decode_rgb` applies the reference sets' decoding rules (EXIF orientation, RGB conversion,
16-bit high byte); the headers of every image are checked before a run (:meth:`ImagesAdapter.preflight`);
unreadable ones are an error listing them, or with ``strict: false`` skipped (the cell's next images move up;
a cell left short fails). A cell's images must share one size.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.errors import ConfigError
from evalkit.generate.adapter import Adapter, GeneratedBatch, GenerationError, GenerationRequest, batched
from evalkit.imagefiles import decode_rgb, verify
from evalkit.suite.image_table import ImageRow, ImageTable, TableError, read_table

SHOWN = 10


def unreadable(rows: list[ImageRow]) -> dict[str, str]:
    """The rows whose file fails the header check: where → why."""
    bad = {}
    for r in rows:
        try:
            verify(r.path.read_bytes())
        except Exception as e:
            bad[f"{r.path} ({r.where})"] = " ".join(str(e).split()) or type(e).__name__
    return bad


class ImagesAdapter(Adapter):
    """Finished images as a model: sample i of a cell is its i-th image (see the module docstring).

    Options: ``manifest`` (.csv, .jsonl, .parquet) or ``folder`` (``model/sampler/steps/guidance/*.png``), made
    absolute by the suite; ``model``: the manifest model to read (set by the suite when it holds several);
    ``strict``: an unreadable image is an error (default), else skipped.
    """

    name = "images"
    family = None  # samples nothing: every sampler label is accepted
    measures_cost = False  # evalkit's clock times file reads here, not generation: cost is what the manifest says

    def __init__(
        self,
        manifest: str | None = None,
        folder: str | None = None,
        model: str | None = None,
        strict: bool = True,
        device: str = "cpu",
    ):
        try:
            self.table: ImageTable = read_table({"manifest": manifest, "folder": folder}, Path.cwd()).select(model)
        except TableError as e:
            raise ConfigError(f"images adapter: {e}") from None
        self.model, self.strict = model, strict
        self.skipped = unreadable(self.table.rows) if not strict else {}
        if self.skipped:
            keep = [r for r in self.table.rows if f"{r.path} ({r.where})" not in self.skipped]
            self.table = ImageTable(self.table.source, self.table.kind, keep, self.table.columns)
        self._cells: dict[tuple[str, int, float], dict[int, ImageRow]] = {}
        self._digest: str | None = None

    @staticmethod
    def preflight(options: dict[str, Any]) -> list[str]:
        """Before a run: every image's header reads (an unreadable one is listed; with ``strict: false``, warned)."""
        try:
            table = read_table(options, Path.cwd()).select(options.get("model"))
        except TableError as e:
            return [str(e)]
        bad = unreadable(table.rows)
        if not bad:
            return []
        listed = "; ".join(f"{k}: {v}" for k, v in list(bad.items())[:SHOWN])
        more = f"; and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
        if options.get("strict", True):
            return [
                f"{len(bad)} unreadable image(s) in {table.source}: {listed}{more}; replace them, or set "
                "options.strict: false to skip them (each cell's next images then move up)"
            ]
        warnings.warn(f"images adapter: skipping {len(bad)} unreadable image(s): {listed}{more}", stacklevel=2)
        return []

    def info(self) -> dict[str, Any]:
        """The images read: their source and, as ``images_sha256``, a digest of every file in order (the run's
        weights guard then refuses to resume onto cells scored from other images)."""
        if self._digest is None:
            h = hashlib.sha256()
            for r in self.table.rows:
                h.update(f"{r.where}\0{hashlib.sha256(r.path.read_bytes()).hexdigest()}\n".encode())
            self._digest = h.hexdigest()
        return {
            "adapter": "images",
            self.table.kind: str(self.table.source),
            **({"model": self.model} if self.model else {}),
            "images": len(self.table.rows),
            "order": self.table.order,
            "columns": list(self.table.columns),
            "skipped": dict(self.skipped),
            "images_sha256": self._digest,
        }

    def expected_model_calls(self, sampler: str, steps: int, options: dict[str, Any]) -> int:
        return 0  # nothing is generated here

    def dry_run_note(self) -> str:
        return "finished images: evalkit makes no model calls; their nfe, seconds and cost are the manifest's"

    # -- generation ------------------------------------------------------------------------------------------
    def cell(self, sampler: str, steps: int, guidance: float) -> dict[int, ImageRow]:
        """Sample index → image of one cell (by ``index``, else by position in the cell's order)."""
        key = (sampler, int(steps), float(guidance))
        if key not in self._cells:
            rows = self.table.cell(*key)
            self._cells[key] = {r.index: r for r in rows} if self.table.order == "index" else dict(enumerate(rows))
        return self._cells[key]

    def generate(self, request: GenerationRequest) -> Iterator[GeneratedBatch]:
        rows = self.cell(request.sampler, request.steps, request.guidance)
        where = f"sampler {request.sampler}, steps {request.steps}, guidance {request.guidance:g}"
        missing = [int(i) for i in request.indices if int(i) not in rows]
        if missing:
            skipped = f" ({len(self.skipped)} unreadable images skipped)" if self.skipped else ""
            raise GenerationError(
                f"{self.table.source}: no image for samples {missing[:SHOWN]} of {where}: the cell has "
                f"{len(rows)} images{skipped}"
            )
        size = None
        for sl in batched(request.indices, request.batch_size):
            picked = [rows[int(i)] for i in request.indices[sl]]
            _check_conditions(picked, request, sl)
            images = [self._read(r) for r in picked]
            size = size or (images[0].shape, picked[0])
            for r, img in zip(picked, images):
                if img.shape != size[0]:
                    raise GenerationError(
                        f"images of one cell ({where}) differ in size: {size[1].path} is {_size(size[0])}, "
                        f"{r.path} is {_size(img.shape)}; resize them to one size"
                    )
            yield GeneratedBatch(
                torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                np.asarray(request.indices[sl]),
                model_calls=_reported_count([r.model_calls for r in picked]),  # type: ignore[arg-type]
                nfe=_reported_count([r.nfe for r in picked]),  # type: ignore[arg-type]
                reported_seconds=_reported([r.seconds for r in picked]),
                cost=_reported([r.cost for r in picked]),
            )

    def _read(self, row: ImageRow) -> np.ndarray:
        try:
            return decode_rgb(row.path.read_bytes())
        except Exception as e:
            raise GenerationError(f"image {row.path} ({row.where}) cannot be decoded: {e}; replace it") from e


def _check_conditions(rows: list[ImageRow], request: GenerationRequest, sl: slice) -> None:
    """The suite checked them when it loaded; a request built otherwise (a test, a plugin) is held to them too."""
    for k, r in enumerate(rows):
        i = sl.start + k
        if r.label is not None and request.labels is not None and int(request.labels[i]) != r.label:
            raise GenerationError(
                f"{r.where}: class {r.label}, but sample {request.indices[i]} asks for {request.labels[i]}"
            )
        if r.prompt is not None and request.prompts is not None and request.prompts[i] != r.prompt:
            raise GenerationError(f"{r.where}: its prompt is not that of sample {request.indices[i]}")


def _reported(values: list[float | None]) -> list[float] | None:
    """Per-image values, NaN where an image has none; None where no image has one."""
    if all(v is None for v in values):
        return None
    return [math.nan if v is None else float(v) for v in values]


def _reported_count(values: list[int | None]) -> int | None:
    """A cell's count (model calls, NFE) as reported: the largest; None (unknown) unless every image has one."""
    return None if any(v is None for v in values) else max(values)  # type: ignore[type-var]


def _size(shape: tuple[int, ...]) -> str:
    return f"{shape[1]}×{shape[0]}"
