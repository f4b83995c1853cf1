"""Speed–quality trade-offs in numbers and words: the Pareto frontier, the best cell per step count and per
budget, and the headline — each claim backed by a CI of the difference, made only between cells of equal N (and,
in a task suite, of one task point: another task or strength is another problem, never ranked against this one).

``pairs`` are the comparisons of :func:`evalkit.study.compare_cells` (a :class:`~evalkit.study.rank.PairTable`);
without them the cells' own CIs decide (a difference only where they do not overlap). The rules and the
words are :mod:`evalkit.study`'s, shared with the summary ``evalkit run`` prints.
"""

from __future__ import annotations

import pandas as pd

from evalkit.study.rank import PairTable, higher_is_better, n_groups, rank, separate_ci_pairs
from evalkit.study.rank import pareto_front as _front
from evalkit.study.task_cells import task_facets
from evalkit.study.words import budget_lines, cell_namer, column_sentences
from evalkit.study.words import headline as _headline

COSTS = (("nfe", "NFE per image"), ("s_per_image", "s per image"))


def _table(cells: pd.DataFrame, metric: str, pairs: PairTable | None) -> PairTable:
    return pairs if pairs is not None else PairTable(separate_ci_pairs(cells, metric))


def pareto_front(cells: pd.DataFrame, cost: str, metric: str, pairs: PairTable | None = None) -> pd.DataFrame:
    """Cells no other cell dominates — at least as cheap (for s/image with a spread: confidently cheaper) and
    confidently better on ``metric`` — by cost. Cells of one N only (a ValueError otherwise)."""
    return _front(cells, cost, metric, pairs)


def best_per_steps(cells: pd.DataFrame, metric: str, pairs: PairTable | None = None) -> pd.DataFrame:
    """The point-best cell at each (task point, N, step count), with ``confident``: the CI of its difference to
    every other cell there excludes 0 (all samplers compared; cells of another N or task point never)."""
    table = _table(cells, metric, pairs)
    out = []
    measured = cells.dropna(subset=[metric]) if metric in cells else cells.iloc[:0]
    for _, by_task in task_facets(measured):
        for _, group in n_groups(by_task):
            for _, col in group.groupby("steps", sort=True):
                r = rank(col, metric, table)
                if r is not None:
                    out.append(r.best.to_frame().T.assign(confident=r.confident and r.runner_up is not None))
    return pd.concat(out) if out else cells.iloc[:0].assign(confident=pd.Series(dtype=bool))


def summary_sentences(
    cells: pd.DataFrame, metric: str, pairs: PairTable | None = None, floors: pd.DataFrame | None = None
) -> list[dict[str, object]]:
    """Per task point, N and guidance scale, in words: the best sampler at each step count or the tie
    (``sentences``), and the best cell within each cost budget (``budgets``: [{cost, lines}]; the Pareto
    frontier). ``task``: the task point's label ("" without tasks)."""
    table, name = _table(cells, metric, pairs), cell_namer(cells, task=False)  # each facet is one task point
    out: list[dict[str, object]] = []
    if higher_is_better(metric) is None or metric not in cells:
        return out
    for task, by_task in task_facets(cells.dropna(subset=[metric])):
        for n, group in n_groups(by_task):
            for g, facet in group.groupby("guidance", sort=True):
                budgets = []
                for cost, unit in COSTS:
                    lines = budget_lines(facet, metric, cost, unit, table, name)
                    if lines:
                        budgets.append({"cost": unit, "lines": lines})
                sentences = column_sentences(facet, metric, table, floors, name)
                out.append({"task": task, "guidance": g, "n": n, "sentences": sentences, "budgets": budgets})
    return out


def headline(cells: pd.DataFrame, metric: str, pairs: PairTable | None = None) -> str:
    """Per task point and N: the best cell overall when a CI backs it (else the tie it is in), next to the
    cheapest cell; each task point's sentences prefixed by its label."""
    if metric not in cells or higher_is_better(metric) is None:
        return ""
    table = _table(cells, metric, pairs)
    texts = []
    for task, by_task in task_facets(cells.dropna(subset=[metric])):
        text = _headline(by_task, metric, table)
        if text:
            texts.append(f"{task}: {text}" if task else text)
    return " ".join(texts)
