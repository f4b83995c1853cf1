"""The grid a suite runs: which (model, sampler, steps, guidance) points become cells.

By default every combination, model-major (then sampler, steps, guidance). A study often needs less or
other than the full cross product:

- per-sampler steps: a sampler entry ``{name: heun, steps: [4, 8]}`` replaces the top-level ``steps`` for
  that sampler (a second-order sampler spends two model calls a step);
- ``zip: [steps, guidance]``: the named lists are paired element by element instead of crossed (equal
  lengths); the pair takes the place of its first list in the nesting order;
- ``guidance_method: [cfg, {name: apg, eta: 0.5}]`` crosses like ``guidance`` (innermost; see
  :mod:`evalkit.suite.guidance`); the default ``[cfg]`` adds nothing to ids, configs or hashes;
- ``only:`` / ``exclude:``: lists of mappings over ``model``, ``sampler`` (its label), ``steps``, ``guidance``
  and ``guidance_method`` (a label or a method name), each a value or a list of values; a mapping matches a cell
  when every key does. A cell is kept when it matches some ``only`` entry (if there are any) and no ``exclude``
  entry.

A filter that matches no cell is an error naming it (a typo would otherwise silently run the wrong grid),
and so is a grid left empty. A suite using none of these expands exactly as before: same cells, same ids.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator
from typing import Any, Protocol

from evalkit.errors import ConfigError
from evalkit.suite.guidance import GuidanceError, parse_methods

AXES = ("models", "samplers", "steps", "guidance", "guidance_method")  # the suite's lists, in nesting order
FILTER_KEYS = {
    "model": "models",
    "sampler": "samplers",
    "steps": "steps",
    "guidance": "guidance",
    "guidance_method": "guidance_method",
}
# the task axis (:mod:`evalkit.suite.tasks`): crossed innermost, never zipped; filters may name its parts
TASK_KEYS = ("task", "strength", "controlnet_scale")
Point = tuple[Any, Any, int, float, Any, Any]  # (ModelSpec, SamplerSpec, steps, guidance, GuidanceSpec, TaskPoint|None)


class Suite(Protocol):
    """The fields of :class:`evalkit.suite.spec.Suite` the grid reads (spec.py imports this module)."""

    models: list[Any]
    samplers: list[Any]
    steps: list[int]
    guidance: list[float]
    guidance_method: list[Any]
    task: list[str]
    zip: list[str]
    only: list[dict[str, Any]]
    exclude: list[dict[str, Any]]

    def cells(self) -> list[Any]: ...

    def task_points(self) -> list[Any]: ...


class GridError(ConfigError):
    """A grid field that does not validate; the suite validator adds the file (``SuiteError``)."""

    def __init__(self, field: str, message: str):
        self.field, self.message = field, message
        super().__init__(f"{field}: {message}")


# -- expansion ------------------------------------------------------------------------------------------------
def full_points(suite: Suite) -> list[Point]:
    """Every point of the grid before ``only`` / ``exclude``: the cross product, with ``zip`` pairing lists."""
    zipped = [a for a in AXES if a in set(suite.zip)]
    tasks = suite.task_points()
    return [
        (c["models"], c["samplers"], c["steps"], c["guidance"], c["guidance_method"], task)
        for c in _walk(suite, zipped, 0, {})
        for task in tasks
    ]


def points(suite: Suite) -> list[Point]:
    """The grid's points, filtered: kept by some ``only`` entry (when there are any) and by no ``exclude`` entry."""
    return [
        p
        for p in full_points(suite)
        if (not suite.only or any(matches(f, p) for f in suite.only)) and not any(matches(f, p) for f in suite.exclude)
    ]


def _values(suite: Suite, axis: str, chosen: dict[str, Any]) -> list[Any]:
    if axis == "steps":
        own = getattr(chosen.get("samplers"), "steps", None)
        return list(own) if own is not None else list(suite.steps)
    return list(getattr(suite, axis))


def _walk(suite: Suite, zipped: list[str], i: int, chosen: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if i == len(AXES):
        yield chosen
        return
    axis = AXES[i]
    if axis in chosen:
        yield from _walk(suite, zipped, i + 1, chosen)
    elif axis in zipped:
        columns = [_values(suite, a, chosen) for a in zipped]
        for combo in zip(*columns):
            yield from _walk(suite, zipped, i + 1, {**chosen, **dict(zip(zipped, combo))})
    else:
        for value in _values(suite, axis, chosen):
            yield from _walk(suite, zipped, i + 1, {**chosen, axis: value})


def matches(entry: dict[str, Any], point: Point) -> bool:
    """Does a filter mapping match a grid point? Each key's value (or any of its list of values) must equal it."""
    model, sampler, steps, guidance, method, task = point
    have = {"model": model.name, "sampler": sampler.label, "steps": steps, "guidance": guidance}
    if task is not None:
        have.update(task.describe())
    for key, want in entry.items():
        wants = want if isinstance(want, list) else [want]
        if key in ("strength", "controlnet_scale"):
            if have.get(key) is None or not any(float(w) == float(have[key]) for w in wants):
                return False
        elif key == "guidance_method":
            if method.label not in wants and method.name not in wants:
                return False
        elif key == "guidance":
            if not any(float(w) == float(guidance) for w in wants):
                return False
        elif have.get(key) not in wants:
            return False
    return True


# -- validation (suite/validate.py turns a GridError into a SuiteError naming the file) -----------------------
def parse_grid(
    raw: dict[str, Any], models: list[str], labels: list[str], tasks: list[str] | None = None
) -> dict[str, Any]:
    """The suite fields ``guidance_method``, ``zip``, ``only`` and ``exclude`` from a suite document."""
    try:
        methods = parse_methods(raw.get("guidance_method"))
    except GuidanceError as e:
        raise GridError(e.field, e.message) from None
    names = list(dict.fromkeys([m.label for m in methods] + [m.name for m in methods]))
    return {
        "guidance_method": methods,
        "zip": parse_zip(raw.get("zip")),
        "only": parse_filters("only", raw.get("only"), models, labels, names, tasks),
        "exclude": parse_filters("exclude", raw.get("exclude"), models, labels, names, tasks),
    }


def parse_zip(raw: Any) -> list[str]:
    """``zip: [steps, guidance]``: two or more distinct list names (``model``/``models`` etc. both accepted)."""
    if raw is None:
        return []
    names = {**{a: a for a in AXES}, **FILTER_KEYS}
    if not isinstance(raw, list) or len(raw) < 2:
        raise GridError("zip", f"expected a list of two or more of {', '.join(AXES)} to pair; got {_kind(raw)}")
    out = []
    for i, item in enumerate(raw):
        if not isinstance(item, str) or item not in names:
            raise GridError(
                f"zip[{i}]", f"unknown list {item!r}; expected one of: {', '.join(AXES)}{_hint(item, names)}"
            )
        out.append(names[item])
    if len(set(out)) != len(out):
        raise GridError("zip", f"each list may be named once; got {raw}")
    return [a for a in AXES if a in out]  # one spelling and order: the same grid hashes the same


def parse_filters(
    field: str,
    raw: Any,
    models: list[str],
    labels: list[str],
    methods: list[str] | None = None,
    tasks: list[str] | None = None,
) -> list[dict[str, Any]]:
    """``only`` / ``exclude``: mappings over model, sampler, steps, guidance, guidance_method and, in a task suite,
    task, strength, controlnet_scale (a value or a list)."""
    if raw is None:
        return []
    keys = _filter_keys(tasks)
    if not isinstance(raw, list) or not raw:
        raise GridError(field, f"expected a non-empty list of mappings over {', '.join(keys)}; got {_kind(raw)}")
    known = {"model": models, "sampler": labels, "guidance_method": methods or ["cfg"], "task": tasks or []}
    return [_filter(f"{field}[{i}]", entry, known, keys) for i, entry in enumerate(raw)]


def _filter_keys(tasks: list[str] | None) -> list[str]:
    return list(FILTER_KEYS) + (list(TASK_KEYS) if tasks else [])


def _filter(field: str, entry: Any, names: dict[str, list[str]], keys: list[str]) -> dict[str, Any]:
    if not isinstance(entry, dict) or not entry:
        raise GridError(field, f"expected a mapping with one or more of {', '.join(keys)}; got {_kind(entry)}")
    out: dict[str, Any] = {}
    for key, value in entry.items():
        if key not in keys:
            shown = key if isinstance(key, str) and key.strip() and key.isprintable() else repr(key)
            raise GridError(f"{field}.{shown}", f"unknown key; expected one of: {', '.join(keys)}{_hint(key, keys)}")
        items = value if isinstance(value, list) else [value]
        if not items:
            raise GridError(f"{field}.{key}", "expected a value or a non-empty list of values; got an empty list")
        known = names.get(key)
        checked = [_filter_value(f"{field}.{key}", key, v, known) for v in items]
        out[key] = checked if isinstance(value, list) else checked[0]
    return out


def _filter_value(field: str, key: str, v: Any, known: list[str] | None) -> Any:
    if known is not None:
        if not isinstance(v, str) or v not in known:
            what = {"model": "model name", "sampler": "sampler label", "task": "task"}.get(key, "guidance method")
            raise GridError(field, f"unknown {what} {v!r}; expected one of: {', '.join(known)}{_hint(v, known)}")
        return v
    number = isinstance(v, (int, float)) and not isinstance(v, bool)
    if key == "steps" and not (number and isinstance(v, int) and v >= 1):
        raise GridError(field, f"expected an integer ≥ 1 (or a list of them); got {_kind(v)}")
    if key in ("guidance", "controlnet_scale") and not (number and _finite(v) and v >= 0):
        raise GridError(field, f"expected a number ≥ 0 (or a list of them); got {_kind(v)}")
    if key == "strength" and not (number and _finite(v) and 0 < v <= 1):
        raise GridError(field, f"expected a number in (0, 1] (or a list of them); got {_kind(v)}")
    return v if key == "steps" else float(v)


def check_grid(suite: Suite) -> None:
    """What only the whole suite shows: zipped lengths, filters that match nothing, an empty grid, shared ids."""
    _check_zip(suite)
    full = full_points(suite)
    for i, entry in enumerate(suite.only):
        if not any(matches(entry, p) for p in full):
            raise GridError(f"only[{i}]", f"{_show(entry)} matches no cell of the grid ({_axes(full)})")
    kept = [p for p in full if not suite.only or any(matches(f, p) for f in suite.only)]
    for i, entry in enumerate(suite.exclude):
        if not any(matches(entry, p) for p in kept):
            where = "left by 'only'" if suite.only else "of the grid"
            raise GridError(f"exclude[{i}]", f"{_show(entry)} matches no cell {where} ({_axes(kept)})")
    cells = suite.cells()
    if not cells:
        raise GridError("exclude", f"the grid is empty: 'only'/'exclude' drop all {len(full)} cells")
    seen: set[str] = set()
    for cell in cells:  # each cell has its own folder: two grid points must not share an id
        if cell.cell_id in seen:
            raise GridError(
                "models/samplers/steps/guidance/guidance_method" + ("/task" if suite.task else ""),
                f"two grid points share the cell id {cell.cell_id!r}; rename a model or set a sampler 'label' "
                "(or use guidance values that differ in their shortest form)",
            )
        seen.add(cell.cell_id)


def _check_zip(suite: Suite) -> None:
    zipped = [a for a in AXES if a in set(suite.zip)]
    if not zipped:
        return
    own = [(i, s) for i, s in enumerate(suite.samplers) if s.steps is not None]
    if "steps" in zipped and own and {"models", "samplers"} & set(zipped):
        raise GridError(
            "zip",
            f"samplers[{own[0][0]}] has its own steps, which cannot be zipped with {zipped[0]}; "
            "zip steps with guidance only",
        )
    lengths = {a: len(getattr(suite, a)) for a in zipped if a != "steps" or len(own) < len(suite.samplers)}
    if len(set(lengths.values())) > 1:
        raise GridError("zip", f"zipped lists must have equal lengths; got {_lengths(lengths)}")
    if "steps" in zipped:
        want = next(iter(v for k, v in lengths.items() if k != "steps"), None)
        for i, s in own:
            if want is not None and len(s.steps or []) != want:
                others = ", ".join(a for a in zipped if a != "steps")
                raise GridError(
                    f"samplers[{i}].steps", f"zipped with {others}: expected {want} values; got {len(s.steps or [])}"
                )


# -- messages -------------------------------------------------------------------------------------------------
def _kind(x: Any) -> str:
    return "nothing (null)" if x is None else f"{type(x).__name__} {x!r}"[:80]


def _finite(v: float) -> bool:
    try:
        return math.isfinite(float(v))
    except OverflowError:
        return False


def _hint(name: Any, known: Any) -> str:
    """A did-you-mean (``options.close_names`` is not importable here: options → spec → grid would cycle)."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6) if isinstance(name, str) else []
    return f"; did you mean {close[0]!r}?" if close else ""


def _show(entry: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in entry.items()) + "}"


def _lengths(lengths: dict[str, int]) -> str:
    return ", ".join(f"{a} has {n}" for a, n in lengths.items())


def _axes(pts: list[Point]) -> str:
    """What the grid holds, per axis, to see at a glance why a filter missed."""
    if not pts:
        return "no cells"
    models = dict.fromkeys(p[0].name for p in pts)
    samplers = dict.fromkeys(p[1].label for p in pts)
    steps = dict.fromkeys(p[2] for p in pts)
    guidance = dict.fromkeys(f"{p[3]:g}" for p in pts)
    axes = [("models", models), ("samplers", samplers), ("steps", steps), ("guidance", guidance)]
    methods = dict.fromkeys(p[4].label for p in pts)
    if list(methods) != ["cfg"]:
        axes.append(("guidance_method", methods))
    tasks = dict.fromkeys(p[5].label for p in pts if p[5] is not None)
    if tasks:
        axes.append(("task", tasks))
    return "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in axes)
