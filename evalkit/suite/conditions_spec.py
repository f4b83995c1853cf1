"""A suite's ``conditions`` field: class labels or prompts per sample and, in a task suite, the task's inputs
(:mod:`evalkit.suite.task_spec`). Files are read later (prompts by :mod:`evalkit.suite.prompts`, images by the run)."""

from __future__ import annotations

from typing import Any

from evalkit.suite.task_spec import TASK_CONDITIONS, read_class_offset, read_task_conditions


def read_conditions(v: Any, x: Any) -> dict[str, Any] | None:
    """The validated ``conditions``: class labels or prompts and, for a task, its inputs; None: unconditional."""
    if x is None:
        return None
    x = v.mapping("conditions", x, dict.fromkeys(["classes", "prompts", "per_prompt", *TASK_CONDITIONS], ""))
    task = read_task_conditions(v, x)  # images, masks, control: evalkit.suite.task_spec
    if ("classes" in x) == ("prompts" in x) and not (task and "classes" not in x):
        raise v.fail("conditions", "expected exactly one of 'classes' (int or list of ints) or 'prompts'")
    if "classes" in x:
        c = x["classes"]
        if isinstance(c, int) and not isinstance(c, bool):
            v.integer("conditions.classes", c, minimum=1)
            return {"classes": list(range(c)), **task}
        if isinstance(c, dict) and task:
            return {"classes": read_class_offset(v, c), **task}
        items = v.list("conditions.classes", c)
        classes = [v.integer(f"conditions.classes[{i}]", k, minimum=0) for i, k in enumerate(items)]
        return {"classes": classes, **task}
    if "prompts" not in x:
        return task  # prompts from the source images' captions where they have them, else none
    p = x["prompts"]
    if isinstance(p, str):
        out: dict[str, Any] = {"prompts": _prompt_source(v, v.path_string("conditions.prompts", p))}
    else:
        out = {
            "prompts": [v.string(f"conditions.prompts[{i}]", s) for i, s in enumerate(v.list("conditions.prompts", p))]
        }
    if "per_prompt" in x:
        out["per_prompt"] = v.integer("conditions.per_prompt", x["per_prompt"], minimum=1)
    return {**out, **task}


def _prompt_source(v: Any, p: str) -> str:
    """``builtin:<name>`` of a shipped prompt set, or a prompt file of a supported kind (read later)."""
    from evalkit.suite.prompts import BUILTIN_PREFIX, PROMPT_SUFFIXES, builtin_prompt_sets

    if p.startswith(BUILTIN_PREFIX):
        v.choice("conditions.prompts", p, [f"{BUILTIN_PREFIX}{n}" for n in builtin_prompt_sets()])
    elif not p.lower().endswith(PROMPT_SUFFIXES):
        raise v.fail(
            "conditions.prompts",
            f"expected a list of prompts, a prompt file ending in "
            f"{', '.join(PROMPT_SUFFIXES)}, or 'builtin:<name>'; got {p!r}",
        )
    return p
