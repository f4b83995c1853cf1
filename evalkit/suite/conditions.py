"""Per-sample conditions: sample ``i`` of every cell gets the same class label or prompt (and, in a task suite, the
same source image ``i mod n``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.suite.prompts import resolve_prompts


@dataclass
class Conditions:
    labels: np.ndarray | None  # int64 (n,)
    prompts: list[str] | None  # (n,)

    def take(self, indices: np.ndarray) -> tuple[np.ndarray | None, list[str] | None]:
        labels = self.labels[indices] if self.labels is not None else None
        prompts = [self.prompts[i] for i in indices] if self.prompts is not None else None
        return labels, prompts


def expand_conditions(
    spec: dict[str, Any] | None,
    n: int,
    base_dir: Path | None = None,
    *,
    source_labels: np.ndarray | None = None,
    source_prompts: list[str] | None = None,
) -> Conditions:
    """Balanced class labels ``classes[i % K]``; prompts repeat ``per_prompt`` times each, cycling. In a task suite
    (``source_labels``/``source_prompts``: per source image, sample i's source being i mod n): ``classes: {offset,
    count}`` asks for (source label + offset) mod count, and without ``prompts`` each sample takes its source's
    caption where the sources have them."""
    if spec is None:
        return Conditions(None, None)
    idx = np.arange(n)
    classes = spec.get("classes")
    if isinstance(classes, dict):
        if source_labels is None:
            raise ValueError("conditions.classes {offset, count} needs source images with class labels")
        own = np.asarray(source_labels, dtype=np.int64)[idx % len(source_labels)]
        return Conditions((own + int(classes["offset"])) % int(classes["count"]), None)
    if classes is not None:
        classes = np.asarray(classes, dtype=np.int64)
        return Conditions(classes[idx % len(classes)], None)
    if "prompts" not in spec:
        return Conditions(
            None, None if source_prompts is None else [source_prompts[i % len(source_prompts)] for i in idx]
        )
    prompts = spec["prompts"]
    if isinstance(prompts, str):
        prompts = resolve_prompts(prompts, base_dir)
    per = int(spec.get("per_prompt", 1))
    return Conditions(None, [prompts[(i // per) % len(prompts)] for i in idx])
