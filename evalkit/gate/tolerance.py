"""The tolerance rule of a baseline entry: how far a value may move before it counts (:class:`Tolerance`), with
σ's own uncertainty over few seed sets (:func:`effective_k`). Imported by :mod:`evalkit.gate.baseline`, whose
names they also are."""

from __future__ import annotations

import math
from dataclasses import dataclass


def effective_k(k: float, n_sets: int) -> float:
    """``k`` read as a normal z-score, turned into Student's t quantile at the same tail probability
    with ``n_sets - 1`` degrees of freedom: σ measured on few seed sets is itself uncertain (with 5
    sets it is below half the truth about one time in eleven), and a tolerance built on an unlucky
    small σ would raise false alarms. ``k=3`` gives 3.45σ with 20 seed sets, 4.1σ with 10, 6.6σ with 5.
    With one set (σ not measured over seed sets, e.g. a bootstrap σ) it is ``k`` itself."""
    if n_sets < 2:
        return k
    from scipy.special import ndtr, stdtrit  # scipy.stats takes seconds to import

    return float(stdtrit(n_sets - 1, ndtr(k)))


@dataclass(frozen=True)
class Tolerance:
    """How far a metric may move before it counts: ``max(k_eff·σ·inflate, rel·|baseline|, abs)``.

    ``k_eff`` is :func:`effective_k`; ``inflate`` is 1 on common seeds and √(1 + 1/K) on a fresh seed
    set (one new draw against the mean of K: the width of a prediction interval).
    """

    k: float = 3.0
    rel: float = 0.02
    abs: float = 0.0

    def width(self, sigma: float, baseline: float, *, n_sets: int, paired: bool) -> float:
        """The tolerance for one entry; a σ that is not a finite number counts as 0 (the floors remain)."""
        sigma = sigma if math.isfinite(sigma) else 0.0
        inflate = 1.0 if paired else math.sqrt(1 + 1 / max(1, n_sets))
        return max(effective_k(self.k, n_sets) * sigma * inflate, self.rel * abs(baseline), self.abs)
