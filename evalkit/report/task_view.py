"""A task suite in the report (image-conditioned tasks, :mod:`evalkit.suite.tasks`): what each cell was given and
what it made, and fidelity against strength.

The task view: per model and task point (task, strength / controlnet scale), a table whose rows are the first few
sample indices every cell of that point kept (the same seeds and sources in every column) and whose columns are
the source image, the mask (inpaint; white where the model generated) or the control image (upscale, controlnet),
then each sampler's output (and each step count / guidance scale where the grid has several). Sample ``i`` of
every cell started from source ``i mod S`` (``RunData.task_inputs``), so a row reads one input across samplers.

The strength plot: a fidelity metric (PSNR where the run measured it, else the primary metric) against strength,
one panel per task (and N), a line per sampler, with the CIs the other plots draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from evalkit.report.figures import legend, panels, plain_text
from evalkit.report.grids import Strip, common_indices, images_strip
from evalkit.report.plots import COLORS, MARKERS, Plot, _draw_line, line_keys
from evalkit.report.tables import direction_word, label, provenance_text, quality_metrics
from evalkit.store import RunData
from evalkit.study.cells import TASK_KEYS, split_key
from evalkit.study.task_cells import task_facets, task_label, task_point

SHOWN = 6  # sample indices (rows) per task table
SIDE = {"inpaint": ("masks", "mask (white: generated)"), "upscale": ("control", "low-resolution input")}
SIDE_DEFAULT = ("control", "control image")  # controlnet, and any task given a control image


@dataclass
class TaskRow:
    """One sample index: its source, mask or control, and each column's output at that index."""

    index: int
    source_index: int
    note: str  # the requested class / prompt of this sample, and the source's own label
    source: Strip
    side: Strip | None
    outputs: list[Strip | None] = field(default_factory=list)


@dataclass
class TaskTable:
    title: str
    caption: str
    side_label: str  # "" where the task has no mask or control image in this run
    cols: list[str]  # one per cell: the sampler (and steps / guidance where they vary)
    rows: list[TaskRow] = field(default_factory=list)


def task_sections(run: RunData, shown: int = SHOWN) -> list[TaskTable]:
    """One table per model and task point of a task run, in the order of its cells ([] for a run without tasks)."""
    inputs = run.task_inputs()
    if inputs is None or "images" not in inputs:
        return []
    done = [c for c in run.cells.values() if c.get("status") == "done" and task_point(c)[0] is not None]
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for c in done:
        groups.setdefault((c["model"], task_point(c)), []).append(c)
    out = []
    for (model, _), cells in groups.items():
        table = _task_table(run, inputs, model, cells, shown)
        if table is not None:
            out.append(table)
    return out


def _task_table(
    run: RunData, inputs: dict[str, np.ndarray], model: str, cells: list[dict[str, Any]], shown: int
) -> TaskTable | None:
    loaded = [(c, run.samples(c["cell_id"])) for c in cells]
    loaded = [(c, s) for c, s in loaded if s is not None and len(s.get("indices", [])) > 0]
    indices = common_indices([s for _, s in loaded], shown) if loaded else []
    if not indices:
        return None
    task = str(cells[0]["task"])
    side_key, side_label = SIDE.get(task, SIDE_DEFAULT)
    if task == "img2img" or side_key not in inputs:
        side_key, side_label = "", ""
    sources = inputs["images"]
    rows = []
    for i in indices:
        s = i % len(sources)
        side = _side_strip(inputs[side_key][s % len(inputs[side_key])], side_key, i) if side_key else None
        outputs = [_output_strip(c, samples, i) for c, samples in loaded]
        rows.append(TaskRow(i, s, _note(loaded[0][1], inputs, i, s), _one(sources[s], f"source {s}"), side, outputs))
    n, seed = cells[0].get("n", "?"), run.manifest.get("config", {}).get("seed", "?")
    caption = (
        f"Rows: samples {', '.join(map(str, indices))} of N={n} per cell; sample i started from source i mod "
        f"{len(sources)} and noise from (seed {seed}, i), the same in every column. Columns: the source"
        + (f", the {side_label}" if side_label else "")
        + f", then each cell's output. Run {run.run_id}."
    )
    return TaskTable(
        title=f"{model} · {task_label(cells[0])} · N={n} · seed {seed}",
        caption=caption,
        side_label=side_label,
        cols=_column_labels([c for c, _ in loaded]),
        rows=rows,
    )


def _one(image: np.ndarray, title: str) -> Strip:
    return images_strip(np.ascontiguousarray(image[None]), title)


def _side_strip(image: np.ndarray, key: str, index: int) -> Strip:
    """A mask (1, H, W) drawn white where the model generates, on black; a control image as it is."""
    if key == "masks":
        white = np.where(image[:1] > 0, 255, 0).astype(np.uint8)
        return _one(np.repeat(white, 3, axis=0), f"mask of sample {index} (white: generated)")
    return _one(image, f"control image of sample {index}")


def _output_strip(cell: dict[str, Any], samples: dict[str, np.ndarray], index: int) -> Strip:
    pos = {int(i): p for p, i in enumerate(samples["indices"])}
    return _one(samples["images"][pos[index]], f"{cell['cell_id']}: sample {index}")


def _note(samples: dict[str, np.ndarray], inputs: dict[str, np.ndarray], index: int, source: int) -> str:
    """What sample ``index`` was asked for (class or prompt) and the source's own label, as text."""
    pos = {int(i): p for p, i in enumerate(samples["indices"])}[index]
    parts = []
    if "labels" in samples and int(samples["labels"][pos]) >= 0:
        parts.append(f"class {int(samples['labels'][pos])}")
    if "prompts" in samples:
        parts.append(f"“{samples['prompts'][pos]}”")
    if "labels" in inputs and len(inputs["labels"]) > source and int(inputs["labels"][source]) >= 0:
        parts.append(f"source label {int(inputs['labels'][source])}")
    return "; ".join(parts)


def _column_labels(cells: list[dict[str, Any]]) -> list[str]:
    """The sampler, with steps and guidance where the cells differ in them; the cell id where that still repeats."""
    several = {k: len({str(c.get(k)) for c in cells}) > 1 for k in ("model", "steps", "guidance")}
    out = []
    for c in cells:
        text = str(c.get("sampler", "?"))
        text += f" · {c.get('steps')} steps" if several["steps"] else ""
        text += f" · g={float(c.get('guidance', 'nan')):g}" if several["guidance"] else ""
        out.append(text)
    return out if len(set(out)) == len(out) else [str(c["cell_id"]) for c in cells]


# -- fidelity vs strength ------------------------------------------------------------------------------------------
def fidelity_metric(df: pd.DataFrame) -> str | None:
    """The metric the strength plot draws: PSNR (its column key) where the results have it, else the first quality
    metric."""
    keys = quality_metrics(df)
    return next((k for k in keys if split_key(k)[0] == "psnr"), keys[0] if keys else None)


def strength_figure(df: pd.DataFrame, cells: pd.DataFrame) -> tuple[str, str, Plot | None]:
    """(title, caption, plot) of the report's strength figure; the plot None where there is nothing to draw."""
    metric = fidelity_metric(df)
    if metric is None:
        return "", "", None
    caption = (
        "One panel per task, a line per sampler through the strengths (the fraction of the schedule run from the "
        f"noised source); error bars: 95% CI where computed, else ±std. {provenance_text(df, metric)}."
    )
    return f"{label(metric)} vs strength", caption, strength_plot(cells, metric)


def strength_plot(cells: pd.DataFrame, metric: str) -> Plot | None:
    """``metric`` against strength: one panel per task (and N where several) that has ≥ 2 strengths, a line per
    sampler (and steps / guidance / controlnet scale where they vary) through its strengths; None without one."""
    if "strength" not in cells or metric not in cells:
        return None
    cells = cells.dropna(subset=["strength", metric])
    facets = _strength_facets(cells)
    if not facets:
        return None
    keys = _strength_keys(cells)
    style = {k: (COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]) for i, k in enumerate(dict.fromkeys(keys))}
    fig, axes = panels(len(facets), legend_chars=max(len(k) for k in style), ncols=min(len(facets), 3))
    data: dict[str, Any] = {
        "title": f"{label(metric)} vs strength",
        "xlabel": "strength",
        "ylabel": f"{label(metric)} ({direction_word(metric)})",
        "panels": {},
    }
    for ax, (title, facet) in zip(axes, facets):
        panel: dict[str, Any] = {"lines": {}}
        for key, sub in facet.groupby(keys.loc[facet.index], sort=False):
            sub = sub.sort_values("strength")
            panel["lines"][key] = _draw_line(ax, sub, "strength", metric, key, style[key], point_labels=[""] * len(sub))
        ax.set(title=title, xlabel="strength", ylabel=data["ylabel"])
        ax.grid(alpha=0.3)
        data["panels"][title] = panel
    legend(fig, axes)
    plain_text(fig)
    return Plot(fig, data)


def _strength_keys(cells: pd.DataFrame) -> pd.Series:
    """The line of each cell: :func:`evalkit.report.plots.line_keys` without the task point, with steps, guidance
    and controlnet scale where the cells hold several (the strengths of one such line are its points)."""
    key = line_keys(cells.drop(columns=[c for c in TASK_KEYS if c in cells]))
    if cells["steps"].nunique() > 1:
        key = key + " · " + cells["steps"].astype(str) + " steps"
    if cells["guidance"].nunique() > 1:
        key = key + " · g=" + cells["guidance"].map(lambda g: f"{float(g):g}")
    if "controlnet_scale" in cells and cells["controlnet_scale"].nunique() > 1:
        key = key + " · cn" + cells["controlnet_scale"].map(lambda c: f"{float(c):g}")
    return key


def _strength_facets(cells: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(panel title, cells) per task and, where the data holds several, per N; only those with ≥ 2 strengths."""
    multi_n = "n" in cells and cells["n"].nunique() > 1
    out = []
    for task, by_task in task_facets(cells, by="task"):
        for n, sub in by_task.groupby("n", sort=True) if multi_n else [(None, by_task)]:
            if sub["strength"].nunique() >= 2:
                out.append((f"{task} · N={n}" if multi_n else task, sub))
    return out
