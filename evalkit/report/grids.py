"""Image grids from each cell's stored samples (``samples.npz``): the same sample indices — so the
same seeds and conditions — side by side across samplers × steps, and across guidance × seed.

Each grid cell is one small strip image (the first few samples, left to right). Strips stay at
native resolution up to 64 px and are enlarged by the browser (CSS ``image-rendering: pixelated``),
which keeps a 32×32 MNIST report tiny; larger images are downscaled and JPEG-encoded.
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from evalkit.store import RunData
from evalkit.study.task_cells import task_label, task_point

MAX_TILE = 64  # px: larger samples are downscaled to this (the report must stay small)
GAP = 2  # px between tiles
PER_ROW = 5  # tiles per row inside one grid cell (10 samples → 2 rows), so tables fit a laptop screen


@dataclass
class Strip:
    """One grid cell: an inline image of the chosen samples of one run cell (PER_ROW to a row)."""

    src: str
    width: int  # display width in CSS px
    height: int
    pixelated: bool
    title: str


@dataclass
class Grid:
    """A table of strips: ``rows`` × ``cols`` labels and ``strips[row][col]`` (None where missing)."""

    title: str
    caption: str
    row_label: str
    col_label: str
    rows: list[str]
    cols: list[str]
    strips: list[list[Strip | None]]
    samples: list[dict[str, Any]] = field(default_factory=list)  # index, class label, prompt per column tile


def strip_image(images: np.ndarray, per_row: int = PER_ROW) -> tuple[bytes, str, int, int]:
    """(K,3,H,W) uint8 → one block of tiles, ``per_row`` to a row, left to right then down;
    PNG for small or grey images, else JPEG. Returns (bytes, mime type, width, height)."""
    k, _, h, w = images.shape
    tiles = images.transpose(0, 2, 3, 1)  # K,H,W,3
    scale = min(1.0, MAX_TILE / max(h, w))
    th, tw = max(1, round(h * scale)), max(1, round(w * scale))
    cols, rows = min(k, per_row), -(-k // per_row)
    canvas = np.full((rows * th + (rows - 1) * GAP, cols * tw + (cols - 1) * GAP, 3), 255, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        img = Image.fromarray(np.ascontiguousarray(tile))
        if scale < 1.0:
            img = img.resize((tw, th), Image.Resampling.LANCZOS)
        y, x = (i // per_row) * (th + GAP), (i % per_row) * (tw + GAP)
        canvas[y : y + th, x : x + tw] = np.asarray(img)
    grey = bool((images[:, 0] == images[:, 1]).all() and (images[:, 1] == images[:, 2]).all())
    out = Image.fromarray(canvas[..., 0] if grey else canvas)
    buf = io.BytesIO()
    if grey or max(h, w) <= 32:
        out.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    else:
        out.save(buf, format="JPEG", quality=85, optimize=True)
        mime = "image/jpeg"
    return buf.getvalue(), mime, canvas.shape[1], canvas.shape[0]


def sample_strip(samples: dict[str, np.ndarray], indices: list[int], title: str) -> Strip:
    pos = {int(i): p for p, i in enumerate(samples["indices"])}
    return images_strip(samples["images"][[pos[i] for i in indices]], title)


def images_strip(imgs: np.ndarray, title: str) -> Strip:
    """(K,3,H,W) uint8 images as one inline strip."""
    data, mime, w, h = strip_image(imgs)
    zoom = 2 if max(imgs.shape[2:]) <= 32 else 1  # small digits are drawn 2× by the browser
    return Strip(
        src=f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}",
        width=w * zoom,
        height=h * zoom,
        pixelated=zoom > 1,
        title=title,
    )


def cell_label(rec: dict[str, Any]) -> str:
    """A cell record as a reader names it: model · sampler · steps · guidance (· task point, in a task suite)."""
    task = task_label(rec)
    return f"{rec.get('model', '?')} · {rec.get('sampler', '?')} · {rec.get('steps', '?')} steps · " + (
        f"guidance {rec.get('guidance', '?')}" + (f" · {task}" if task else "")
    )


def _with_task(title: str, rec: dict[str, Any]) -> str:
    task = task_label(rec)
    return f"{title} · {task}" if task else title


def common_indices(samples: list[dict[str, np.ndarray]], count: int) -> list[int]:
    """The first ``count`` sample indices stored in every cell (so columns share seed and condition)."""
    sets = [set(map(int, s["indices"])) for s in samples]
    common = sorted(set.intersection(*sets)) if sets else []
    return common[:count]


def _describe_samples(s: dict[str, np.ndarray], indices: list[int]) -> list[dict[str, Any]]:
    pos = {int(i): p for p, i in enumerate(s["indices"])}
    out = []
    for i in indices:
        p = pos[i]
        lab = int(s["labels"][p]) if "labels" in s and int(s["labels"][p]) >= 0 else None
        prompt = str(s["prompts"][p]) if "prompts" in s else None
        out.append({"index": i, "label": lab, "prompt": prompt})
    return out


def _seed_text(run: RunData) -> str:
    seed = run.manifest.get("config", {}).get("seed", "?")
    return (
        f"seed {seed}; sample i always uses noise from (seed {seed}, i), so each position in a grid cell "
        "is the same start in every cell"
    )


def sampler_steps_grids(run: RunData, count: int = 10) -> list[Grid]:
    """Per model, guidance (and task point, in a task suite): rows = sampler, columns = steps, each cell the same
    ``count`` samples."""
    grids = []
    done = [c for c in run.cells.values() if c.get("status") == "done"]
    for model, g, point in dict.fromkeys((c["model"], float(c["guidance"]), task_point(c)) for c in done):
        cells = [c for c in done if (c["model"], float(c["guidance"]), task_point(c)) == (model, g, point)]
        grid = _grid(
            run,
            cells,
            row_key="sampler",
            col_key="steps",
            count=count,
            title=f"{_with_task(f'{model} · guidance {g:g}', cells[0])}: samplers × steps",
            row_label="sampler",
            col_label="steps",
        )
        if grid:
            grids.append(grid)
    return grids


def guidance_seed_grids(run: RunData, count: int = 10) -> list[Grid]:
    """Per model (and task point, in a task suite) at its largest step count: columns = guidance, rows = sampler;
    within a cell the samples run over seeds (sample indices), so each row reads guidance × seed for one sampler."""
    grids = []
    done = [c for c in run.cells.values() if c.get("status") == "done"]
    for model, point in dict.fromkeys((c["model"], task_point(c)) for c in done):
        mine = [c for c in done if (c["model"], task_point(c)) == (model, point)]
        if len({float(c["guidance"]) for c in mine}) < 2:
            continue
        steps = max(int(c["steps"]) for c in mine)
        cells = [c for c in mine if int(c["steps"]) == steps]
        grid = _grid(
            run,
            cells,
            row_key="sampler",
            col_key="guidance",
            count=count,
            title=f"{_with_task(f'{model} · {steps} steps', cells[0])}: guidance × seed",
            row_label="sampler",
            col_label="guidance",
        )
        if grid:
            grids.append(grid)
    return grids


def _grid(
    run: RunData,
    cells: list[dict[str, Any]],
    *,
    row_key: str,
    col_key: str,
    count: int,
    title: str,
    row_label: str,
    col_label: str,
) -> Grid | None:
    loaded = [(c, run.samples(c["cell_id"])) for c in cells]
    loaded = [(c, s) for c, s in loaded if s is not None and len(s.get("indices", [])) > 0]
    if not loaded:
        return None
    indices = common_indices([s for _, s in loaded], count)
    if not indices:
        return None
    rows = list(dict.fromkeys(_key(c, row_key) for c, _ in loaded))
    cols = list(dict.fromkeys(_key(c, col_key) for c, _ in loaded))
    if col_key in ("steps", "guidance"):
        cols.sort(key=float)
    table: list[list[Strip | None]] = [[None] * len(cols) for _ in rows]
    for c, s in loaded:
        r, k = rows.index(_key(c, row_key)), cols.index(_key(c, col_key))
        table[r][k] = sample_strip(s, indices, f"{c['cell_id']}: samples {indices[0]}–{indices[-1]}")
    n = loaded[0][0].get("n", "?")
    caption = (
        f"Samples {indices[0]}–{indices[-1]} of N={n} per cell, left to right, {PER_ROW} per row; "
        f"{_seed_text(run)}. "
        f"Run {run.run_id}."
    )
    return Grid(
        title=title,
        caption=caption,
        row_label=row_label,
        col_label=col_label,
        rows=rows,
        cols=cols,
        strips=table,
        samples=_describe_samples(loaded[0][1], indices),
    )


def _key(cell: dict[str, Any], key: str) -> str:
    v = cell[key]
    return f"{float(v):g}" if key == "guidance" else str(v)
