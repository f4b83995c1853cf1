"""The check of a named spec (``{kind: boxes, count: 2}``, ``{detector: canny, low: 50}``): one field picks the
part, the others are its options, each checked by the caller's rule. Shared by masks and detectors."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any


def check_named_spec(
    spec: Any,
    field: str,
    key: str,
    known: Mapping[str, Iterable[str]],
    value_problem: Callable[[str, Any], str | None],
    example: str,
    label: str,
) -> tuple[list[str], str | None]:
    """(every problem as a line naming the field, the named part or None). ``known``: part name → its options;
    ``value_problem(option, value)``: what is wrong with a value (None: fine); ``label``: what ``key`` names in
    messages ("mask kind", "detector"). Never raises."""
    if not isinstance(spec, dict):
        return [f"{field}: expected a mapping such as {example}; got {spec!r}"], None
    name = spec.get(key)
    if name is None:
        return [f"{field}.{key}: required; one of {', '.join(known)}"], None
    if name not in known:
        return [f"{field}.{key}: unknown {label} {name!r}; expected one of {', '.join(known)}"], None
    allowed = list(known[name])
    problems = []
    for option, x in spec.items():
        if option == key:
            continue
        if option not in allowed:
            listed = ", ".join([key, *allowed])
            problems.append(f"{field}.{option}: unknown key for {label} {name}; allowed: {listed}")
        elif (why := value_problem(option, x)) is not None:
            problems.append(f"{field}.{option}: {why}; got {x!r}")
    return problems, name
