"""The ``evalkit-baseline/1`` document, validated: every field's type and range, before anything is judged.

A baseline decides whether CI passes, so a hand edit or a broken writer must not turn into a silent
pass: numbers are numbers (``value: 'abc'`` is refused, not read as NaN), σ and the tolerance are finite
and non-negative, directions are ``higher`` or ``lower``, each (cell, metric, extractor) appears once,
and there is at least one entry. :func:`baseline_problems` lists every problem; :meth:`Baseline.load`
raises them together as one :class:`~evalkit.gate.baseline.CheckConfigError` (exit 2).
"""

from __future__ import annotations

import math
import re
from typing import Any

DEFAULT_RESAMPLES = 200  # paired bootstrap resamples of `evalkit check`

DIRECTIONS = ("higher", "lower")
_SHA256 = re.compile(r"[0-9a-f]{64}")
SHOWN = 8  # problems listed before "and N more"

# field → (type check, what it must be); optional fields may be absent (None allowed where noted)
_TOP_REQUIRED = {
    "suite": "str",
    "protocol_hash": "str",
    "protocol": "dict",
    "config": "dict",
    "seed": "int",
    "seeds": "ints",
    "n": "count",
    "extractors": "dict",
    "reference": "dict?",
    "models": "dict",
    "entries": "list",
}
_TOP_OPTIONAL = {
    "config_hash": "str",
    "evalkit_version": "str",
    "versions": "strmap?",  # absent in baselines made before evalkit recorded them
    "sources": "dict?",  # a task suite's sources (fingerprint, count): evalkit.gate.task_sources
    "created_at": "str",
    "features_file": "str?",
    "features_sha256": "str?",
}
_ENTRY_REQUIRED = {
    "cell": "str",
    "model": "str",
    "sampler": "str",
    "steps": "int",
    "guidance": "finite",
    "metric": "str",
    "metric_def": "str",
    "extractor": "str",
    "direction": "direction",
    "value": "finite",
    "mean": "finite",
    "sigma": "nonneg",
    "values": "finites",
}
_ENTRY_OPTIONAL = {
    "sigma_sampling": "nonneg",
    "tolerance": "dict",
    # a task cell's task and axis values (absent for cells without a task or without that axis)
    "task": "str",
    "strength": "finite",
    "controlnet_scale": "finite",
}
_TOLERANCE = {"k": "nonneg", "rel": "nonneg", "abs": "nonneg", "rule": "str"}


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _type_problem(kind: str, x: Any) -> str | None:
    """None when ``x`` is of ``kind``, else what it should have been."""
    if kind.endswith("?"):
        return None if x is None else _type_problem(kind[:-1], x)
    ok = {
        "str": lambda: isinstance(x, str),
        "dict": lambda: isinstance(x, dict),
        "strmap": lambda: isinstance(x, dict) and all(isinstance(v, str) for v in x.values()),
        "list": lambda: isinstance(x, list),
        "int": lambda: isinstance(x, int) and not isinstance(x, bool),
        "count": lambda: isinstance(x, int) and not isinstance(x, bool) and x > 0,
        "ints": lambda: (
            isinstance(x, list) and bool(x) and all(isinstance(i, int) and not isinstance(i, bool) for i in x)
        ),
        "finite": lambda: _is_number(x) and math.isfinite(x),
        "nonneg": lambda: _is_number(x) and math.isfinite(x) and x >= 0,
        "finites": lambda: isinstance(x, list) and bool(x) and all(_is_number(v) and math.isfinite(v) for v in x),
        "direction": lambda: x in DIRECTIONS,
    }[kind]()
    if ok:
        return None
    return {
        "str": "a string",
        "dict": "a mapping",
        "strmap": "a mapping of names to version strings",
        "list": "a list",
        "int": "an integer",
        "count": "a positive integer",
        "ints": "a non-empty list of integers",
        "finite": "a finite number",
        "nonneg": "a finite non-negative number",
        "finites": "a non-empty list of finite numbers",
        "direction": "'higher' or 'lower'",
    }[kind]


def _fields(where: str, doc: dict[str, Any], required: dict[str, str], optional: dict[str, str]) -> list[str]:
    problems = [f"{where}: missing {name!r}" for name in required if name not in doc]
    problems += [f"{where}: unknown field {name!r}" for name in doc if name not in required and name not in optional]
    for name, kind in {**required, **optional}.items():
        if name in doc and (want := _type_problem(kind, doc[name])):
            problems.append(f"{where}.{name}: expected {want}, got {doc[name]!r:.60}")
    return problems


def _entry_problems(i: int, e: Any, n_seeds: int | None) -> list[str]:
    where = f"entries[{i}]"
    if not isinstance(e, dict):
        return [f"{where}: expected a mapping, got {e!r:.60}"]
    problems = _fields(where, e, _ENTRY_REQUIRED, _ENTRY_OPTIONAL)
    if isinstance(e.get("tolerance"), dict):
        problems += _fields(f"{where}.tolerance", e["tolerance"], {}, _TOLERANCE)
    values = e.get("values")
    if n_seeds is not None and isinstance(values, list) and values and len(values) != n_seeds:
        problems.append(f"{where}.values: {len(values)} values for {n_seeds} seed sets")
    return problems


def baseline_problems(doc: dict[str, Any]) -> list[str]:
    """Every way ``doc`` (the JSON, ``format`` removed) is not a usable baseline; [] when it is."""
    problems = _fields("baseline", doc, _TOP_REQUIRED, _TOP_OPTIONAL)
    if doc.get("features_file") is not None and not _SHA256.fullmatch(str(doc.get("features_sha256") or "")):
        problems.append("baseline.features_sha256: expected the sidecar's sha256 (64 hex digits)")
    entries = doc.get("entries")
    if not isinstance(entries, list):
        return problems
    if not entries:
        problems.append("baseline.entries: empty (a baseline with nothing to check would always pass)")
    seeds = doc.get("seeds")
    n_seeds = len(seeds) if isinstance(seeds, list) and seeds else None
    seen: dict[tuple[Any, ...], int] = {}
    for i, e in enumerate(entries):
        problems += _entry_problems(i, e, n_seeds)
        if isinstance(e, dict):
            key = (str(e.get("cell")), str(e.get("metric")), str(e.get("extractor")))
            if key in seen:
                problems.append(f"entries[{i}]: duplicate of entries[{seen[key]}] (cell, metric, extractor) = {key}")
            seen.setdefault(key, i)
    return problems


def shown(problems: list[str]) -> list[str]:
    """The first few problems and a count of the rest (a broken file can have hundreds)."""
    return problems[:SHOWN] + ([f"and {len(problems) - SHOWN} more"] if len(problems) > SHOWN else [])
