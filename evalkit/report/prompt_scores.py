"""Per-prompt scores: for each finished cell and each per-image score it stored (the reward and aesthetic models'
outputs, ``evalkit.metrics.scores``), the mean score of every prompt over all of the cell's samples, and the best and
worst prompts with one of their images where the cell kept one.

The cell's metric row is the mean over all samples (with its CI); this section says *which* prompts carry it, so a
reader sees what a model does badly, not only how much. Read from the stored per-sample features and the run's
conditions: nothing is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from evalkit.metrics.scores import SCORES, per_prompt_means
from evalkit.report.grids import Strip, cell_label, sample_strip
from evalkit.store import RunData
from evalkit.study.words import LABELS

# the per-image score outputs an extractor may store (the score metrics' names) → the label the report shows
SCORE_OUTPUTS = {d.name: LABELS.get(d.name, d.name) for d in SCORES}
SHOWN = 3  # best and worst prompts per cell


@dataclass
class PromptScore:
    prompt: str
    mean: float
    n: int
    image: Strip | None  # one kept sample of this prompt, where the cell kept one


@dataclass
class CellPrompts:
    cell: str  # model · sampler · steps · guidance
    score: str  # label of the score
    extractor: str
    prompts: int  # distinct prompts in the cell
    best: list[PromptScore] = field(default_factory=list)
    worst: list[PromptScore] = field(default_factory=list)


def prompt_sections(run: RunData, shown: int = SHOWN) -> list[CellPrompts]:
    """Best and worst ``shown`` prompts of each finished cell, for each per-image score it stored."""
    _, prompts = run.conditions()
    if prompts is None:
        return []
    out = []
    for rec in (c for c in run.cells.values() if c.get("status") == "done"):
        features = run.features(rec["cell_id"])
        found = [(ex, o) for ex, outs in features.items() for o in outs if o in SCORE_OUTPUTS]
        if not found:
            continue
        kept = run.samples(rec["cell_id"])
        for extractor, output in found:
            scores = features[extractor][output]
            table = per_prompt_means(scores, prompts[: len(scores)])
            ranked = sorted(table.items(), key=lambda item: -item[1][0])  # best first
            section = CellPrompts(cell_label(rec), SCORE_OUTPUTS[output], extractor, len(ranked))
            section.best = [_entry(p, mean, n, kept) for p, (mean, n) in ranked[:shown]]
            worst = ranked[len(ranked) - min(shown, max(len(ranked) - shown, 0)) :][::-1]
            section.worst = [_entry(p, mean, n, kept) for p, (mean, n) in worst]
            out.append(section)
    return out


def _entry(prompt: str, mean: float, n: int, kept: dict[str, np.ndarray] | None) -> PromptScore:
    image = None
    if kept is not None and "prompts" in kept and len(kept.get("images", ())):
        hits = [i for i, p in enumerate(kept["prompts"]) if str(p) == prompt and i < len(kept["images"])]
        if hits:
            image = sample_strip(kept, [int(kept["indices"][hits[0]])], prompt)
    return PromptScore(prompt, mean, n, image)
