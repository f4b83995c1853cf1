"""An images suite: the grid of finished images (ComfyUI, A1111, your own serving) read from their manifest.

A suite model ``{name: mine, adapter: images, options: {manifest: runs.csv}}`` (or ``options: {folder: out}``, the
layout ``model/sampler/steps/guidance/*.png``; :mod:`evalkit.suite.image_table` reads both) names images that exist
already. Nobody should have to write their grid out again, so :func:`fill_images`, run by the suite validator before it
checks anything, rewrites the suite document:

- the manifest's path becomes absolute (relative to the suite file, as reference and prompt paths are);
- a manifest holding several models (its ``model`` column, or the folders' first level) gives one suite model per
  model, named by it (``options.model`` set); a model entry with ``options: {model: sdxl}`` takes that one only;
- in a suite whose every model is an images model, ``samplers``, ``steps`` and ``guidance`` may be left out: each
  is filled with the values the manifests hold (samplers in the order met, steps and guidance sorted); when the
  grid crossed from them holds points without images, and the suite has no ``only`` or ``zip`` of its own, an
  ``only`` entry per cell with images keeps exactly the cells the manifests have;
- ``conditions`` left out, and every image has a ``class`` (or ``prompt``): sample i's condition is the manifest's,
  written as the shortest repeating list (labels 0..9 cycling are ``classes: [0, ..., 9]``, as ``classes: 10``
  gives).

Sampler names of an all-images suite are free labels: an external sampler such as ``dpmpp_2m_karras_comfy`` is not
an evalkit sampler, and the images adapter does not sample (:func:`sampler_names` lets the validator accept them;
nothing else looks a sampler up by name for a model of the images adapter, whose ``family`` is None). A suite mixing
images and other models lists its samplers, which must then be evalkit's.

After the suite is built, :func:`check_images` holds every images cell to the suite: at least ``samples`` images, an
image for each sample index, the manifest's ``class``/``prompt`` equal to the suite's condition of that sample, no grid
column missing where the suite has several values on that axis, no guidance method but cfg (the images carry
their own guidance). Each failure is a suite error (exit 2) naming the cells and files.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from evalkit.registry import SAMPLERS
from evalkit.suite.conditions import expand_conditions
from evalkit.suite.image_table import ImageRow, ImageTable, TableError, read_table

ADAPTER = "images"
SHOWN = 5  # problems named in one message
Fail = Callable[[str, str], Exception]  # (field, message) → the validator's SuiteError
_AXES = (("samplers", "sampler"), ("steps", "steps"), ("guidance", "guidance"))


def is_images(model: Any) -> bool:
    return isinstance(model, dict) and model.get("adapter") == ADAPTER


def all_images(raw: Any) -> bool:
    models = raw.get("models") if isinstance(raw, dict) else None
    return isinstance(models, list) and bool(models) and all(is_images(m) for m in models)


def sampler_names(raw: Any) -> list[str]:
    """The sampler names the validator accepts: evalkit's, and in an all-images suite its own labels too."""
    names = SAMPLERS.names()
    given = raw.get("samplers") if all_images(raw) else None
    if not isinstance(given, list):
        return names
    labels = [s if isinstance(s, str) else s.get("name") if isinstance(s, dict) else None for s in given]
    return names + [x for x in dict.fromkeys(labels) if isinstance(x, str) and x not in names]


# -- before validation: the grid from the manifests ----------------------------------------------------------------
def fill_images(raw: Any, file: str | Path | None, fail: Fail) -> Any:
    """The suite document with its images models' grid filled in (see the module docstring); others unchanged."""
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), list):
        return raw
    if not any(is_images(m) for m in raw["models"]):
        return raw
    base = Path(file).parent if file else Path.cwd()
    raw, models, tables = dict(raw), [], {}
    for i, m in enumerate(raw["models"]):
        opts = m.get("options") if is_images(m) else None
        if not isinstance(opts, dict):
            models.append(m)  # not an images model, or options the validator will refuse
            continue
        try:
            entries = _split(m, opts, read_table(opts, base))
        except TableError as e:
            raise fail(f"models[{i}].options", str(e)) from None
        models += [entry for entry, _ in entries]
        tables.update({entry["name"]: table for entry, table in entries})
    raw["models"] = models
    if all_images(raw) and tables:
        filled = _fill_axes(raw, tables, fail)
        if filled and "only" not in raw and "zip" not in raw:
            _keep_cells_with_images(raw, tables)
        if "conditions" not in raw:
            _fill_conditions(raw, tables)
    return raw


def _split(m: dict[str, Any], opts: dict[str, Any], table: ImageTable) -> list[tuple[dict[str, Any], ImageTable]]:
    """The suite model entries one images model stands for: one per model the table holds (or the one picked)."""
    kind = "manifest" if opts.get("manifest") is not None else "folder"
    opts = {**opts, kind: str(table.source)}
    picked = opts.get("model")
    if picked is not None:
        return [({**m, "name": m.get("name", picked), "options": opts}, table.select(str(picked)))]
    names = table.models()
    if len(names) == 1:
        name = m.get("name", names[0] if names[0] is not None else ADAPTER)
        return [({**m, "name": name, "options": opts}, table)]
    return [({**m, "name": n, "options": {**opts, "model": n}}, table.select(n)) for n in names if n is not None]


def _fill_axes(raw: dict[str, Any], tables: dict[str, ImageTable], fail: Fail) -> list[str]:
    """Fill the axes the suite leaves out from the tables' values; the axes filled."""
    filled = []
    own_steps = isinstance(raw.get("samplers"), list) and all(
        isinstance(s, dict) and "steps" in s for s in raw["samplers"]
    )
    for axis, col in _AXES:
        if axis in raw or (axis == "steps" and own_steps):
            continue
        having = [t for t in tables.values() if col in t.columns]
        if not having:
            if axis == "guidance":
                continue  # the suite default (1) holds for images made without a guidance value
            source = next(iter(tables.values())).source
            raise fail(
                axis, f"not in the suite, and {source} has no {col!r} column to fill it from; list {axis} in the suite"
            )
        values = [getattr(r, col) for t in having for r in t.rows]
        raw[axis] = list(dict.fromkeys(values)) if axis == "samplers" else sorted(set(values))
        filled.append(axis)
    return filled


def _keep_cells_with_images(raw: dict[str, Any], tables: dict[str, ImageTable]) -> None:
    """``only``: the crossed grid's points that have images, when some do not (the manifests are no full cross)."""
    samplers, steps, guidance = raw.get("samplers"), raw.get("steps", []), raw.get("guidance", [1.0])
    if not (isinstance(samplers, list) and isinstance(steps, list) and isinstance(guidance, list)):
        return  # malformed: the validator says so
    points, kept = 0, []
    for model, table in tables.items():
        for s in samplers:
            name = s if isinstance(s, str) else s.get("name") if isinstance(s, dict) else None
            label = s.get("label", name) if isinstance(s, dict) else name
            own = s.get("steps") if isinstance(s, dict) and "steps" in s else steps
            for st in own if isinstance(own, list) else []:
                for g in guidance:
                    points += 1
                    if _number(st) and _number(g) and table.cell(str(name), st, float(g)):
                        kept.append({"model": model, "sampler": label, "steps": st, "guidance": float(g)})
    if kept and len(kept) < points:
        raw["only"] = kept


def _fill_conditions(raw: dict[str, Any], tables: dict[str, ImageTable]) -> None:
    """``conditions`` from the manifest, where every image has a class (or a prompt): the first cell's, per sample."""
    n = raw.get("samples")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        return
    rows = [r for t in tables.values() for r in t.rows]
    for col, attr, key in (("class", "label", "classes"), ("prompt", "prompt", "prompts")):
        if all(col in t.columns for t in tables.values()) and all(getattr(r, attr) is not None for r in rows):
            first = next(iter(next(iter(tables.values())).cells().values()))
            if len(first) >= n:  # else check_images() names the short cell
                raw["conditions"] = _repeating(key, [getattr(r, attr) for r in first[:n]])
            return


def _repeating(key: str, values: list[Any]) -> dict[str, Any]:
    """The shortest ``conditions`` that expand to ``values`` (:func:`evalkit.suite.conditions.expand_conditions`:
    sample i gets ``items[(i // per_prompt) % len(items)]``)."""
    per = 1
    if key == "prompts":
        run = next((i for i, v in enumerate(values) if v != values[0]), len(values))
        if 1 < run < len(values) and all(values[i] == values[i - i % run] for i in range(len(values))):
            per = run
    seq = values[::per]
    prefix = [0] * len(seq)  # KMP: the shortest p with seq[i] == seq[i % p] is len - the longest border
    for i in range(1, len(seq)):
        k = prefix[i - 1]
        while k and seq[i] != seq[k]:
            k = prefix[k - 1]
        prefix[i] = k + (seq[i] == seq[k])
    out: dict[str, Any] = {key: seq[: len(seq) - prefix[-1]]}
    if per > 1:
        out["per_prompt"] = per
    return out


# -- after validation: every images cell against the suite ------------------------------------------------------
def check_images(suite: Any, fail: Fail) -> None:
    """Every cell of an images model has the suite's samples, in order and under the suite's conditions."""
    images = [m for m in suite.models if m.adapter == ADAPTER]
    if not images:
        return
    base = Path(suite.file).parent if suite.file else Path.cwd()
    labels, prompts = _conditions(suite, base)
    cells = suite.cells()
    for m in images:
        field = f"model {m.name} (adapter images)"
        try:
            table = read_table(m.options, base).select(m.options.get("model"))
        except TableError as e:
            raise fail(field, str(e)) from None
        mine = [c for c in cells if c.model.name == m.name]
        problems = _axis_problems(table, mine)
        for cell in mine:
            rows = table.cell(cell.sampler.name, cell.steps, cell.guidance)
            problems += _cell_problems(cell.cell_id, rows, table.order, suite.samples, labels, prompts)
        if problems:
            more = f"; and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
            raise fail(field, f"{table.source}: " + "; ".join(problems[:SHOWN]) + more)


def _conditions(suite: Any, base: Path) -> tuple[Any, list[str] | None]:
    try:
        c = expand_conditions(suite.conditions, suite.samples, base)
    except Exception:  # an unreadable prompt file: the preflight reports it
        return None, None
    return (None if c.labels is None else [int(x) for x in c.labels]), c.prompts


def _axis_problems(table: ImageTable, cells: list[Any]) -> list[str]:
    problems = []
    methods = sorted({c.guidance_method.label for c in cells if not c.guidance_method.is_default})
    if methods:
        problems.append(
            f"guidance_method {', '.join(methods)}: finished images carry their own guidance (its scale is the "
            "guidance column); name a method in the sampler label instead"
        )
    for col, values in (
        ("sampler", {c.sampler.name for c in cells}),
        ("steps", {c.steps for c in cells}),
        ("guidance", {c.guidance for c in cells}),
    ):
        if col not in table.columns and len(values) > 1:
            problems.append(
                f"no {col!r} column, but the suite has several ({', '.join(map(str, sorted(values)))}): "
                "which images belong to which cell cannot be told"
            )
    return problems


def _cell_problems(
    cell_id: str, rows: list[ImageRow], order: str, n: int, labels: Any, prompts: list[str] | None
) -> list[str]:
    """Too few images, a missing sample index, conditions that differ from the suite's (the first few named)."""
    if order == "index":
        missing = sorted(set(range(n)) - {r.index for r in rows})
        if missing:
            shown = ", ".join(map(str, missing[:SHOWN])) + (", ..." if len(missing) > SHOWN else "")
            return [f"cell {cell_id}: no image for sample index {shown} ({len(missing)} of {n} missing)"]
    elif len(rows) < n:
        return [f"cell {cell_id}: {len(rows)} images, fewer than samples ({n})"]
    bad = []
    for i, r in enumerate(rows[:n]):
        for what, got, want in (("class", r.label, labels), ("prompt", r.prompt, prompts)):
            if got is None:
                continue
            if want is None:
                return [f"cell {cell_id}: the manifest gives each image a {what}, but the suite's conditions have none"]
            if got != want[i]:
                bad.append(f"sample {i} ({r.where}) has {what} {got!r}, the suite gives {want[i]!r}")
    if bad:
        how = {"index": "by its index", "seed": "by seed", "manifest": "in manifest order"}.get(order, "by file name")
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        return [
            f"cell {cell_id}: conditions differ from the suite's (sample i is the cell's i-th image {how}): {shown}"
        ]
    return []


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
