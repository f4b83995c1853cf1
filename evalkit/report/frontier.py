"""Speed–quality trade-offs: the Pareto frontier and the best cell per budget, in numbers and words."""

from __future__ import annotations

import math

import pandas as pd

from evalkit.report.tables import fmt, higher_is_better, label


def pareto_front(cells: pd.DataFrame, cost: str, metric: str) -> pd.DataFrame:
    """Cells no other cell beats on both cost (lower) and ``metric`` (its own direction), by cost."""
    hib = bool(higher_is_better(metric))
    pts = cells.dropna(subset=[cost, metric])
    pts = pts.sort_values([cost, metric], ascending=[True, not hib], kind="stable")
    keep, best = [], -math.inf if hib else math.inf
    for i, row in pts.iterrows():
        v = row[metric]
        if (v > best) if hib else (v < best):
            keep.append(i)
            best = v
    return pts.loc[keep]


def best_per_budget(cells: pd.DataFrame, cost: str, metric: str) -> pd.DataFrame:
    """For each cost level present, the best cell costing at most that much — listed only where it
    changes, which is exactly the frontier read as 'at ≤ X, use Y'."""
    return pareto_front(cells, cost, metric)


def best_per_steps(cells: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The best cell (all samplers compared) at each step count."""
    hib = bool(higher_is_better(metric))
    pts = cells.dropna(subset=[metric])
    if pts.empty:
        return pts
    idx = pts.groupby("steps", sort=True)[metric].idxmax() if hib else pts.groupby("steps", sort=True)[metric].idxmin()
    return pts.loc[idx.to_numpy()]


def cell_name(row: pd.Series, multi_model: bool = False, multi_run: bool = False) -> str:
    """How a cell is named in sentences: its sampler, prefixed by run/model only when they vary."""
    parts = [str(row["run_id"])] if multi_run else []
    parts += [str(row["model"])] if multi_model else []
    return " / ".join([*parts, str(row["sampler"])])


def summary_sentences(cells: pd.DataFrame, metric: str) -> list[dict[str, object]]:
    """Per guidance scale, in words: the best sampler at each step count (``sentences``) and the
    best cell within each cost budget (``budgets``: [{cost, lines}]; the Pareto frontier)."""
    multi = {"multi_model": cells["model"].nunique() > 1, "multi_run": cells["run_id"].nunique() > 1}
    name = label(metric)
    out: list[dict[str, object]] = []
    for g, facet in cells.groupby("guidance", sort=True):
        sentences = []
        for _, r in best_per_steps(facet, metric).iterrows():
            others = facet[(facet["steps"] == r["steps"]) & (facet.index != r.name)].dropna(subset=[metric])
            runner_up = _runner_up(others, metric)
            tail = (
                f", ahead of {cell_name(runner_up, **multi)} ({fmt(runner_up[metric])})"
                if runner_up is not None
                else ""
            )
            sentences.append(
                f"At {r['steps']} steps, {cell_name(r, **multi)} has the best {name}: {fmt(r[metric])}{tail}."
            )
        budgets = []
        for cost, unit in (("nfe", "NFE per image"), ("s_per_image", "s per image")):
            front = best_per_budget(facet, cost, metric)
            if not front.empty:
                budgets.append(
                    {
                        "cost": unit,
                        "lines": [
                            f"≤ {fmt(r[cost])} {unit}: {cell_name(r, **multi)} at {r['steps']} steps "
                            f"({name} {fmt(r[metric])})"
                            for _, r in front.iterrows()
                        ],
                    }
                )
        out.append({"guidance": g, "sentences": sentences, "budgets": budgets})
    return out


def headline(cells: pd.DataFrame, metric: str) -> str:
    """One sentence: the best cell overall and what it costs, next to the cheapest cell."""
    pts = cells.dropna(subset=[metric])
    if pts.empty:
        return ""
    hib = bool(higher_is_better(metric))
    best = pts.loc[pts[metric].idxmax() if hib else pts[metric].idxmin()]
    multi = {"multi_model": cells["model"].nunique() > 1, "multi_run": cells["run_id"].nunique() > 1}
    text = (
        f"Best {label(metric)} overall: {cell_name(best, **multi)} at {best['steps']} steps, guidance "
        f"{best['guidance']:g} ({fmt(best[metric])}; {fmt(best['nfe'])} NFE, "
        f"{fmt(best['s_per_image'])} s per image)."
    )
    cheap = pts.dropna(subset=["nfe"])
    if not cheap.empty:
        c = cheap.sort_values(["nfe", metric], ascending=[True, not hib]).iloc[0]
        text += (
            f" Cheapest: {cell_name(c, **multi)} at {c['steps']} steps, guidance {c['guidance']:g} "
            f"({fmt(c['nfe'])} NFE, {label(metric)} {fmt(c[metric])})."
        )
    return text


def _runner_up(others: pd.DataFrame, metric: str) -> pd.Series | None:
    if others.empty:
        return None
    hib = bool(higher_is_better(metric))
    return others.loc[others[metric].idxmax() if hib else others[metric].idxmin()]
