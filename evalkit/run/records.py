"""What a finished cell writes about itself: its record's spec part (cell.json) and its tidy result rows."""

from __future__ import annotations

from typing import Any

from evalkit.suite import Cell, Suite


def cell_record(suite: Suite, cell: Cell, batch_size: int, device: str, world_size: int) -> dict[str, Any]:
    """The spec part of cell.json: the cell's identity (task and its axes included), sampler, N, seed, hash."""
    return {
        **cell.describe(),
        "sampler_name": cell.sampler.name,
        "sampler_options": cell.sampler.options,
        "n": cell.n,
        "seed": cell.seed,
        "batch_size": batch_size,
        "device": device,
        "world_size": world_size,
        "cell_hash": suite.cell_hash(cell),
    }


def result_row(
    run_id: str, suite: Suite, cell: Cell, partial: dict[str, Any], cost: dict[str, float], device: str
) -> dict[str, Any]:
    """A tidy result row: the cell's identity, the metric's value and the cell's cost columns. A task cell's rows
    also carry ``task`` and its axis values (``strength``, ``controlnet_scale``), as steps and guidance."""
    nan = float("nan")
    return {
        "run_id": run_id,
        "cell_id": cell.cell_id,
        "suite": suite.name,
        "model": cell.model.name,
        "sampler": cell.sampler_label,
        "steps": cell.steps,
        "guidance": cell.guidance,
        "n": cell.n,
        "seed": cell.seed,
        "std": nan,
        "ci_low": nan,
        "ci_high": nan,
        "extractor": "",
        "weights_id": "",
        "mode": "",
        **partial,
        "device": device,
        "config_hash": suite.config_hash(),
        "model_calls": cost["model_calls"],
        "nfe": cost["nfe"],
        "s_per_image": cost["s_per_image"],
        **({} if cell.task is None else _task_columns(cell)),
    }


def _task_columns(cell: Cell) -> dict[str, Any]:
    task = cell.task
    assert task is not None
    nan = float("nan")
    return {
        "task": task.task,
        "strength": nan if task.strength is None else task.strength,
        "controlnet_scale": nan if task.controlnet_scale is None else task.controlnet_scale,
    }
