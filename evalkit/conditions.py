"""Per-sample conditions: sample ``i`` of every cell gets the same class label or prompt."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Conditions:
    labels: np.ndarray | None  # int64 (n,)
    prompts: list[str] | None  # (n,)

    def take(self, indices: np.ndarray) -> tuple[np.ndarray | None, list[str] | None]:
        labels = self.labels[indices] if self.labels is not None else None
        prompts = [self.prompts[i] for i in indices] if self.prompts is not None else None
        return labels, prompts


def read_prompt_file(path: Path) -> list[str]:
    """One prompt per non-empty line of a text file."""
    if not path.is_file():
        raise FileNotFoundError(f"conditions.prompts: prompt file {path} does not exist")
    prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"conditions.prompts: prompt file {path} holds no prompts")
    return prompts


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
        path = Path(prompts)
        prompts = read_prompt_file(path if path.is_absolute() or base_dir is None else base_dir / path)
    per = int(spec.get("per_prompt", 1))
    return Conditions(None, [prompts[(i // per) % len(prompts)] for i in idx])
