"""Comparisons between cells: paired differences with their CI (ties inside the noise), real-vs-real noise
floors, rankings and Pareto frontiers made only within equal N. Read by the run summary, the report and the
gate; it reads run folders (:mod:`evalkit.store`) and never runs a suite::

    from evalkit.store import read_run
    from evalkit.study import compare_cells, summary_text
    pairs = compare_cells(["runs/smoke"], "fd")     # one row per pair of cells of equal N: diff, CI, verdict
    print(summary_text(read_run("runs/smoke")))     # every metric with its CI, ties, floors and N

Names are imported on first use (the gate and the CLI import this package cheaply).
"""

from __future__ import annotations

from evalkit.lazy import lazy_exports

_EXPORTS = {
    "compare_cells": "compare",
    "compare_with_intervals": "compare",
    "noise_floors": "floors",
    "floors_frame": "floors",
    "at_floor": "floors",
    "PairTable": "rank",
    "pareto_front": "rank",
    "summary_text": "summary",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
