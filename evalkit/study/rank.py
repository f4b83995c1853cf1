"""Rankings and Pareto frontiers that only claim what a CI backs, and only within equal N.

The input is a cell frame (one row per cell: ``run_id``, ``cell_id``, ``n``, the cell fields, a column per
metric with ``<metric>_lo``/``<metric>_hi`` for its CI, and the cost columns) and the pair comparisons of
:func:`evalkit.study.compare.compare_cells` (:class:`PairTable` looks them up in either orientation). Where
no comparisons are given, :func:`separate_ci_pairs` makes them from the cells' own CIs (a difference only
where they do not overlap).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from evalkit.study.cells import TASK_KEYS, split_key
from evalkit.study.compare import NO_CI, SEPARATE, pair_columns
from evalkit.study.paired import BETTER, TIE, WORSE, pair_verdict
from evalkit.study.task_cells import task_columns, task_facets

# Directions of the cost rows (no metric in the registry makes them); quality rows take theirs from the registry.
COST_DIRECTIONS = {
    "images_per_s": True,
    "s_per_image": False,
    "ms_per_model_call": False,
    "peak_mem_mb": False,
    "nfe": False,
    "model_calls": False,
}
SPREAD_COSTS = {"s_per_image"}  # costs that are measured (with a spread), not counted
EXACT = {"nfe", "model_calls"}  # counted, not measured: a difference is exact


def higher_is_better(metric: str) -> bool | None:
    """Direction of a metric column (a result row name, or ``<row>@<extractor>``): the cost table, else the
    ``higher_is_better`` of the registered metric that makes the row; None when neither knows it."""
    row, _ = split_key(metric)
    if row in COST_DIRECTIONS:
        return COST_DIRECTIONS[row]
    return _registry_direction(row)


_DIRECTIONS: dict[str, bool] = {}  # result row → direction, as the registry said it (found rows only)


def _registry_direction(row: str) -> bool | None:
    """The registry's direction of a result row: scanned once per row found, cached; a row no metric makes is
    looked up again next time (a metric registered later is then found)."""
    if row in _DIRECTIONS:
        return _DIRECTIONS[row]
    from evalkit.metrics.base import available_metrics, get_metric

    for name in available_metrics():
        try:
            directions = get_metric(name).higher_is_better
        except Exception:  # a plugin that fails to load must not stop a report
            continue
        if row in directions:
            _DIRECTIONS[row] = bool(directions[row])
            return _DIRECTIONS[row]
    return None


def cell_key(row: pd.Series | dict[str, Any]) -> tuple[str, str]:
    return str(row["run_id"]), str(row["cell_id"])


class PairTable:
    """Pair comparisons by (metric row, extractor, cell a, cell b), in either orientation (a reversed pair is
    flipped). Looked up by metric column key (:func:`evalkit.study.cells.split_key`): ``fd@clip`` finds the
    comparisons on clip features; a bare ``fd`` finds them only where one extractor measured ``fd``."""

    def __init__(self, pairs: pd.DataFrame | None) -> None:
        self._rows: dict[tuple[str, str, tuple[str, str], tuple[str, str]], dict[str, Any]] = {}
        self._extractors: dict[str, set[str]] = {}
        if pairs is None or pairs.empty:
            return
        for r in pairs.to_dict("records"):
            a, b = (str(r["run_a"]), str(r["cell_a"])), (str(r["run_b"]), str(r["cell_b"]))
            metric, extractor = str(r["metric"]), _text(r.get("extractor"))
            self._rows.setdefault((metric, extractor, a, b), r)
            self._extractors.setdefault(metric, set()).add(extractor)

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, metric: str, a: tuple[str, str], b: tuple[str, str]) -> dict[str, Any] | None:
        """The comparison of a against b (``diff`` = a − b, ``verdict`` a's), or None when they were not compared."""
        row, extractor = split_key(metric)
        if extractor is None:  # a bare row name: unambiguous only where one extractor measured it
            known = self._extractors.get(row, set())
            if len(known) != 1:
                return None
            extractor = next(iter(known))
        hit = self._rows.get((row, extractor, a, b))
        if hit is not None:
            return hit
        hit = self._rows.get((row, extractor, b, a))
        if hit is None:
            return None
        flip = {BETTER: WORSE, WORSE: BETTER}
        out = dict(hit)
        for k in ("run", "cell", "value", "model", "sampler", "steps", "guidance", *TASK_KEYS):
            if f"{k}_a" in hit:  # a task suite's pairs name each side's task too
                out[f"{k}_a"], out[f"{k}_b"] = hit[f"{k}_b"], hit[f"{k}_a"]
        out.update(diff=-hit["diff"], ci_low=-hit["ci_high"], ci_high=-hit["ci_low"])
        out["verdict"] = flip.get(hit["verdict"], hit["verdict"])
        return out


def _text(v: Any) -> str:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def separate_ci_pairs(cells: pd.DataFrame, metric: str, confidence: float = 0.95) -> pd.DataFrame:
    """Comparisons of every two cells of equal N (and, in a task suite, one task, as
    :func:`~evalkit.study.compare.compare_cells` makes them) from their own CIs (``<metric>_lo``/``_hi``): a
    difference only where the intervals do not overlap; ``no CI`` (a tie) where a cell has none."""
    hib = higher_is_better(metric)
    columns = pair_columns(cells.columns)
    if metric not in cells or hib is None:
        return pd.DataFrame(columns=columns)
    out = []
    name, extractor = split_key(metric)
    extractor = extractor or ""
    pts = cells.dropna(subset=[metric])
    tasks = task_columns(pts.columns)
    groups = [g for _, by_n in pts.groupby(_n_of(pts), sort=False) for _, g in task_facets(by_n, by="task")]
    for group in groups:
        for (_, a), (_, b) in itertools.combinations(group.iterrows(), 2):
            bounds = [a.get(f"{metric}_lo"), a.get(f"{metric}_hi"), b.get(f"{metric}_lo"), b.get(f"{metric}_hi")]
            if name in EXACT:  # counts: the difference is its own interval
                bounds = [a[metric], a[metric], b[metric], b[metric]]
            known = all(v is not None and not pd.isna(v) for v in bounds)
            ci = (bounds[0] - bounds[3], bounds[1] - bounds[2]) if known else (math.nan, math.nan)
            row = {"metric": name, "extractor": extractor, "n": a.get("n"), "diff": a[metric] - b[metric]}
            for side, r in (("a", a), ("b", b)):
                row |= {f"run_{side}": r["run_id"], f"cell_{side}": r["cell_id"], f"value_{side}": r[metric]}
                row |= {f"{c}_{side}": r.get(c) for c in ("model", "sampler", "steps", "guidance", *tasks)}
            row |= {"ci_low": ci[0], "ci_high": ci[1], "confidence": confidence}
            row |= {"basis": SEPARATE if known else NO_CI, "note": "" if known else "no CI stored"}
            row["verdict"] = pair_verdict(ci if known else None, higher_is_better=hib)
            out.append(row)
    return pd.DataFrame(out, columns=columns)


def _n_of(cells: pd.DataFrame) -> pd.Series:
    return cells["n"] if "n" in cells else pd.Series(-1, index=cells.index)


def n_groups(cells: pd.DataFrame) -> list[tuple[Any, pd.DataFrame]]:
    """The cells split by N (rankings and frontiers are made only within one)."""
    if cells.empty:
        return []
    return [(n, g) for n, g in cells.groupby(_n_of(cells), sort=True, dropna=False)]


def mixed_n_note(cells: pd.DataFrame) -> str:
    """A visible note where the cells hold several N ("" otherwise)."""
    ns = sorted({int(v) for v in cells["n"].dropna()}) if "n" in cells else []
    if len(ns) < 2:
        return ""
    return (
        f"These results mix cells of N = {', '.join(map(str, ns))} samples: rankings, bests and frontiers are made "
        "only between cells of equal N (a smaller N has a larger bias and noise; its values are not comparable)."
    )


@dataclass
class Ranking:
    """The point-best cell of a set of equal N, and what a CI says about it."""

    best: pd.Series
    confident: bool  # the CI of the difference excludes 0 against every other cell
    ties: list[tuple[pd.Series, dict[str, Any] | None]] = field(default_factory=list)  # (cell, comparison)
    runner_up: tuple[pd.Series, dict[str, Any] | None] | None = None

    @property
    def measured_ties(self) -> list[pd.Series]:
        """The cells tied with the best by a CI that contains 0 (not those with no CI at all: nothing is known)."""
        return [c for c, comp in self.ties if comp is not None and comp["basis"] != NO_CI]


def rank(cells: pd.DataFrame, metric: str, pairs: PairTable) -> Ranking | None:
    """The best cell by ``metric`` (one N only), whether it is confidently best, and the cells tied with it."""
    hib = higher_is_better(metric)
    pts = cells.dropna(subset=[metric]) if metric in cells else cells.iloc[:0]
    if pts.empty or hib is None:
        return None
    if "n" in pts and pts["n"].nunique() > 1:
        raise ValueError(f"rank: cells of several N ({sorted(pts['n'].unique())}); rank within one N")
    order = pts.sort_values(metric, ascending=not hib, kind="stable")
    best = order.iloc[0]
    ranking = Ranking(best, confident=len(order) > 1)
    for _, other in order.iloc[1:].iterrows():
        comp = pairs.get(metric, cell_key(best), cell_key(other))
        if ranking.runner_up is None:
            ranking.runner_up = (other, comp)
        if comp is None or comp["verdict"] != BETTER:
            ranking.confident = False
            ranking.ties.append((other, comp))
    return ranking


def cheaper_or_equal(q: pd.Series, p: pd.Series, cost: str) -> bool:
    """q costs at most what p does: plainly for counted costs (NFE), and for measured ones (s/image) with a
    spread on both, confidently (q's upper bound below p's lower bound); NaN spread: plain comparison."""
    if pd.isna(q[cost]) or pd.isna(p[cost]):
        return False
    if cost in SPREAD_COSTS:
        q_hi, p_lo = q.get(f"{cost}_hi"), p.get(f"{cost}_lo")
        spreads = [q.get(f"{cost}_lo"), q_hi, p_lo, p.get(f"{cost}_hi")]
        if all(v is not None and not pd.isna(v) for v in spreads):
            return bool(q_hi < p_lo)
    return bool(q[cost] <= p[cost])


def dominated_by(p: pd.Series, cells: pd.DataFrame, cost: str, metric: str, pairs: PairTable) -> pd.Series | None:
    """A cell at least as cheap as ``p`` and confidently better (CI of the difference excludes 0), or None."""
    for _, q in cells.iterrows():
        if cell_key(q) == cell_key(p) or not cheaper_or_equal(q, p, cost):
            continue
        comp = pairs.get(metric, cell_key(q), cell_key(p))
        if comp is not None and comp["verdict"] == BETTER:
            return q
    return None


def pareto_front(cells: pd.DataFrame, cost: str, metric: str, pairs: PairTable | None = None) -> pd.DataFrame:
    """The cells no other cell dominates (at least as cheap and confidently better), by cost; one N only.

    Without ``pairs`` the cells' own CIs decide (:func:`separate_ci_pairs`)."""
    pts = cells.dropna(subset=[cost, metric]) if {cost, metric} <= set(cells.columns) else cells.iloc[:0]
    if pts.empty:
        return pts
    if "n" in pts and pts["n"].nunique() > 1:
        raise ValueError(f"pareto_front: cells of several N ({sorted(pts['n'].unique())}); one N at a time")
    pairs = pairs if pairs is not None else PairTable(separate_ci_pairs(pts, metric))
    keep = [i for i, p in pts.iterrows() if dominated_by(p, pts, cost, metric, pairs) is None]
    hib = bool(higher_is_better(metric))
    return pts.loc[keep].sort_values([cost, metric], ascending=[True, not hib], kind="stable")


__all__ = ["BETTER", "TIE", "WORSE", "PairTable", "Ranking", "pareto_front", "rank", "separate_ci_pairs"]
