"""A task suite's fields: ``task``, ``strength``, ``controlnet_scale`` and the task inputs under ``conditions``.

``conditions.images`` names the source images as a reference does (``{dataset: mnist-heldout, samples: 64}``, or
``{path: folder | zip | tar | .npz}``, read later by the same reader); ``conditions.masks`` is generated (``{kind:
centre | boxes | strokes, ...}``, :mod:`evalkit.imageops.masks`) or given (``{path: ...}``, binarised at 127);
``conditions.control`` is derived from the source by a detector (``{detector: canny | lowres | gray, ...}``,
:mod:`evalkit.imageops.detectors`) or given (``{path: ...}``, with ``detector`` naming what made it, for
``control_fidelity``). ``classes: {offset: 1, count: 10}`` asks each sample for class ``(source label + 1) mod 10``
(an edit toward another class). Each task's needs are checked here; files are checked by the preflight.
"""

from __future__ import annotations

from typing import Any

from evalkit.suite.tasks import TASKS

IMAGE_KEYS = {"dataset": "", "path": "", "samples": "", "strict": "", "name": ""}
TASK_CONDITIONS = ("images", "masks", "control")


def read_tasks(v: Any, raw: dict[str, Any]) -> dict[str, Any]:
    """``task`` (a name or list of names), ``strength`` and ``controlnet_scale`` (lists), each checked against the
    tasks that take them (a strength no task reads would silently multiply nothing)."""
    x = raw.get("task")
    names = [] if x is None else [x] if isinstance(x, str) else v.list("task", x)
    tasks = [v.choice(f"task[{i}]" if not isinstance(x, str) else "task", t, list(TASKS)) for i, t in enumerate(names)]
    if len(set(tasks)) != len(tasks):
        raise v.fail("task", f"each task may be named once; got {tasks}")
    strength = (
        [_strength(v, i, s) for i, s in enumerate(v.list("strength", raw["strength"]))] if "strength" in raw else []
    )
    scale = raw.get("controlnet_scale")
    scales = [] if scale is None else [_scale(v, i, s) for i, s in enumerate(v.list("controlnet_scale", scale))]
    if strength and not any(TASKS[t].takes_strength for t in tasks):
        takers = ", ".join(t for t, d in TASKS.items() if d.takes_strength)
        raise v.fail("strength", f"no task of the suite takes a strength (tasks that do: {takers}); set 'task'")
    if scale is not None and "controlnet" not in tasks:
        raise v.fail("controlnet_scale", "only the controlnet task takes a ControlNet scale; set 'task: controlnet'")
    return {"task": tasks, "strength": strength, "controlnet_scale": scales}


def _scale(v: Any, i: int, s: Any) -> float:
    return v.number(f"controlnet_scale[{i}]", s, minimum=0.0)


def _strength(v: Any, i: int, s: Any) -> float:
    value = v.number(f"strength[{i}]", s, minimum=0.0)
    if not 0 < value <= 1:
        raise v.fail(f"strength[{i}]", f"expected a number in (0, 1] (the fraction of the schedule run); got {s!r}")
    return value


def read_task_conditions(v: Any, x: dict[str, Any]) -> dict[str, Any]:
    """The task inputs of a ``conditions`` mapping (``images``, ``masks``, ``control``), validated; {} where none."""
    from evalkit.imageops.detectors import check_detector_spec
    from evalkit.imageops.masks import check_mask_spec

    out: dict[str, Any] = {}
    if "images" in x:
        out["images"] = _images(v, "conditions.images", x["images"])
    for key, check in (("masks", check_mask_spec), ("control", check_detector_spec)):
        if key not in x:
            continue
        if not out.get("images"):
            raise v.fail(f"conditions.{key}", "needs 'conditions.images' (the source images it goes with)")
        spec = v.mapping(f"conditions.{key}", x[key], {**_keys(x[key]), "path": "", "strict": ""})
        if "path" in spec:
            v.path_string(f"conditions.{key}.path", spec["path"])
            given = {k: val for k, val in spec.items() if k not in ("path", "strict")}
            problems = check(given, f"conditions.{key}") if key == "control" and given else []
        else:
            problems = check(dict(spec), f"conditions.{key}")
        if problems:
            raise v.fail(f"conditions.{key}", "; ".join(problems))
        out[key] = dict(spec)
    return out


def _keys(x: Any) -> dict[str, str]:
    return dict.fromkeys(x, "") if isinstance(x, dict) else {}


def _images(v: Any, f: str, x: Any) -> dict[str, Any]:
    if isinstance(x, str):
        x = {"path": v.path_string(f, x)}
    x = v.mapping(f, x, IMAGE_KEYS)
    kinds = [k for k in ("dataset", "path") if k in x]
    if len(kinds) != 1:
        raise v.fail(f, f"expected exactly one of 'dataset', 'path'; got {kinds or 'none'}")
    v.path_string(f"{f}.{kinds[0]}", x[kinds[0]])
    if "samples" in x:
        v.integer(f"{f}.samples", x["samples"], minimum=1)
    return dict(x)


def read_class_offset(v: Any, x: Any) -> dict[str, int]:
    """``classes: {offset: k, count: K}``: sample i asks for class (label of its source + k) mod K."""
    x = v.mapping("conditions.classes", x, {"offset": "", "count": ""})
    if "offset" not in x or "count" not in x:
        raise v.fail("conditions.classes", "expected {offset: integer, count: integer ≥ 1} (relative to the sources)")
    return {
        "offset": v.integer("conditions.classes.offset", x["offset"]),
        "count": v.integer("conditions.classes.count", x["count"], minimum=1),
    }


def check_task_needs(v: Any, tasks: list[str], conditions: dict[str, Any] | None) -> None:
    """Every task's inputs are there; task inputs without a task are refused (they would be ignored)."""
    have = set(conditions or {}) & set(TASK_CONDITIONS)
    for t in tasks:
        missing = [k for k in TASKS[t].needs if k not in have]
        if missing:
            raise v.fail(f"conditions.{missing[0]}", f"task {t!r} needs conditions.{', conditions.'.join(missing)}")
    if have and not tasks:
        raise v.fail("task", f"conditions.{sorted(have)[0]} is given but no 'task' says what to do with it")


def check_regions(v: Any, metrics: list[Any], conditions: dict[str, Any] | None) -> None:
    """``region: masked`` reads each output's mask: the suite needs ``conditions.masks``."""
    for i, m in enumerate(metrics):
        if m.options.get("region") == "masked" and "masks" not in (conditions or {}):
            raise v.fail(f"metrics[{i}].options.region", "'masked' needs conditions.masks (an inpainting suite)")


def detector_spec(control: dict[str, Any] | None) -> dict[str, Any] | None:
    """The detector that made a task's controls, ``{"detector": name, **options}``, from ``conditions.control``
    (its ``path``/``strict`` are where given files are, not the detector's); None where given files name none."""
    detector = {k: v for k, v in (control or {}).items() if k not in ("path", "strict")}
    return detector or None
