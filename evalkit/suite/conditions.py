"""Per-sample conditions: sample ``i`` of every cell gets the same class label or prompt."""

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


def expand_conditions(spec: dict[str, Any] | None, n: int, base_dir: Path | None = None) -> Conditions:
    """Balanced class labels ``classes[i % K]``; prompts repeat ``per_prompt`` times each, cycling."""
    if spec is None:
        return Conditions(None, None)
    idx = np.arange(n)
    if "classes" in spec:
        classes = np.asarray(spec["classes"], dtype=np.int64)
        return Conditions(classes[idx % len(classes)], None)
    prompts = spec["prompts"]
    if isinstance(prompts, str):
        prompts = resolve_prompts(prompts, base_dir)
    per = int(spec.get("per_prompt", 1))
    return Conditions(None, [prompts[(i // per) % len(prompts)] for i in idx])
