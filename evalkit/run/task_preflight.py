"""The preflight's look at a task suite (:mod:`evalkit.run.preflight`): the source images open, given masks and
control maps are there, and each built-in model runs the suite's tasks with the values they need. Cheap: the sources
are opened (a folder is listed), not decoded."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import ConfigError, EvalkitError
from evalkit.generate.planning import ZOO_TASKS, check_mid_start, strength_start
from evalkit.registry import SAMPLERS
from evalkit.suite import Suite


def task_problems(suite: Suite, base: Path) -> tuple[list[str], np.ndarray | None, list[str] | None]:
    """(problems, source labels, source captions): what :func:`evalkit.suite.expand_conditions` needs."""
    if not suite.task:
        return [], None, None
    conditions = suite.conditions or {}
    problems: list[str] = []
    labels = prompts = None
    from evalkit.references import open_reference  # torch: only where a suite has a task (the dry run imports none)
    from evalkit.run.task_inputs import source_captions

    try:
        ref = open_reference(conditions["images"], base_dir=base)
        labels, prompts = ref.labels, source_captions(ref)
    except (EvalkitError, OSError) as e:
        problems.append(f"conditions.images: {e}")
    for key in ("masks", "control"):
        spec = conditions.get(key) or {}
        if "path" in spec:
            path = Path(os.path.expanduser(str(spec["path"])))
            path = path if path.is_absolute() else base / path
            if not path.exists():
                problems.append(f"conditions.{key}.path: nothing at {path} (expected images, one per source image)")
    if isinstance(conditions.get("classes"), dict) and labels is None and not problems:
        problems.append(
            "conditions.classes: {offset, count} asks for a class relative to each source's label, but the source "
            "images have no class labels (a built-in dataset such as mnist-heldout has them)"
        )
    return problems + _zoo_problems(suite), labels, prompts


def _zoo_problems(suite: Suite) -> list[str]:
    out: list[str] = []
    for model in suite.models:
        if model.adapter != "zoo":
            continue
        for point in dict.fromkeys(p for p in suite.task_points() if p is not None):
            if point.task not in ZOO_TASKS:
                out.append(f"model {model.name} (built-in zoo) does not run task {point.task!r}; it runs {_listed()}")
            elif point.strength is None and point.task != "inpaint":
                out.append(
                    f"task {point.task!r} on model {model.name} is SDEdit from the (upsampled) source: set 'strength' "
                    "(the fraction of the schedule run, e.g. [0.3, 0.6])"
                )
            else:
                out += _start_problems(suite, point.strength)
    return list(dict.fromkeys(out))


def _start_problems(suite: Suite, strength: float | None) -> list[str]:
    """Samplers that cannot start part-way through their schedule, at a strength that would need them to."""
    out, strength = [], 1.0 if strength is None else strength  # inpaint's default: the whole schedule
    for sampler in suite.samplers:
        for steps in sampler.steps or suite.steps:
            try:
                start = strength_start(steps, strength)
                check_mid_start(sampler.name, SAMPLERS.get(sampler.name).scheduler, start)
            except ConfigError as e:
                out.append(f"samplers: {sampler.label} at {steps} steps, strength {strength:g}: {e}")
    return out


def _listed() -> str:
    return ", ".join(ZOO_TASKS)


def source_summary(conditions: dict[str, Any]) -> str:
    """One line for ``--dry-run``: where the sources come from, and the masks / controls."""
    images = conditions.get("images", {})
    parts = [f"sources {images.get('dataset') or images.get('path')}"]
    for key in ("masks", "control"):
        if key in conditions:
            spec = conditions[key]
            said = str(spec["path"]) if "path" in spec else ", ".join(f"{k}={v}" for k, v in spec.items())
            parts.append(f"{key} {said}")
    return "; ".join(parts)
