"""Task cells (image-conditioned suites, :mod:`evalkit.suite.tasks`) as comparisons, rankings and sentences tell
them apart.

Besides model, sampler, steps, guidance and N, a task cell is identified by its task and the task's axis values,
``strength`` and ``controlnet_scale`` (:func:`evalkit.study.cells.cell_keys`): two cells that differ only there are
two cells, never merged, paired or named alike. Result rows of a suite without tasks carry no task columns, and
a task cell without such an axis holds NaN in it; everything here leaves frames and records without task
columns as they were (no column added, names unchanged).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from evalkit.study.cells import TASK_KEYS

TaskPoint = tuple[str | None, float | None, float | None]  # (task, strength, controlnet_scale); None: not set
NO_TASK: TaskPoint = (None, None, None)


def task_columns(columns: Iterable[Any]) -> list[str]:
    """The task columns (:data:`evalkit.study.cells.TASK_KEYS`) among ``columns``, in their order; [] for a
    frame of a suite without tasks."""
    have = set(columns)
    return [c for c in TASK_KEYS if c in have]


def _missing(v: Any) -> bool:
    if v is None or v is pd.NA:
        return True
    try:
        return isinstance(v, float) and math.isnan(v)
    except TypeError:
        return False


def task_point(rec: Mapping[str, Any] | pd.Series) -> TaskPoint:
    """A cell's (task, strength, controlnet_scale), None where unset: comparable and hashable (NaN is not)."""
    task, strength, scale = (rec.get(c) for c in TASK_KEYS)
    return (
        None if _missing(task) or str(task) == "" else str(task),
        None if _missing(strength) else float(strength),
        None if _missing(scale) else float(scale),
    )


def task_label(rec: Mapping[str, Any] | pd.Series) -> str:
    """``img2img st0.3``, ``controlnet cn1``, ``edit`` (the cell id's task part, spaced); "" for a cell without one."""
    task, strength, scale = task_point(rec)
    if task is None:
        return ""
    parts = [task]
    if strength is not None:
        parts.append(f"st{strength:g}")
    if scale is not None:
        parts.append(f"cn{scale:g}")
    return " ".join(parts)


def same_task(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Do two cells share task and axis values (both without a task included)?"""
    return task_point(a) == task_point(b)


def task_fields(rec: Mapping[str, Any] | pd.Series, columns: Iterable[str] = TASK_KEYS) -> dict[str, Any]:
    """The task columns of a record that has them, as stored (NaN where the task has no such axis); {} otherwise."""
    return {c: rec.get(c) for c in columns if c in rec}


def _order(p: TaskPoint) -> tuple[Any, ...]:
    return tuple((x is not None, x if x is not None else "") for x in p)


def task_points(cells: pd.DataFrame) -> list[TaskPoint]:
    """The distinct task points of ``cells``, sorted (no task first, then by task, strength, scale)."""
    if not task_columns(cells.columns) or cells.empty:
        return [NO_TASK] if not cells.empty else []
    return sorted({task_point(r) for r in cells.to_dict("records")}, key=_order)


def varies(cells: pd.DataFrame) -> bool:
    """Do ``cells`` hold more than one task point (then a cell's name must say which)?"""
    return len(task_points(cells)) > 1


def task_facets(cells: pd.DataFrame, by: str = "point") -> list[tuple[str, pd.DataFrame]]:
    """``cells`` split by task point (``by="point"``: task and axis values) or by task alone (``by="task"``), as
    (label, cells) in :func:`task_points` order; one facet ("", cells) for cells without task columns."""
    if not task_columns(cells.columns):
        return [("", cells)]
    points = [task_point(r) for r in cells.to_dict("records")]
    keys = points if by == "point" else [(p[0], None, None) for p in points]
    out = []
    for key in sorted(set(keys), key=_order):
        mask = [k == key for k in keys]
        label = task_label(dict(zip(TASK_KEYS, key)))
        out.append((label, cells[mask]))
    return out
