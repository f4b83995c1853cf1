"""Numbers and comparisons in words: every "best", "ahead of" and frontier line is backed by a CI, and says
"≈" (a tie) where the CI of the difference contains 0. Shared by the run summary and the HTML report."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pandas as pd

from evalkit.study.cells import split_key
from evalkit.study.compare import NO_CI, PAIRED, SEPARATE, UNPAIRED
from evalkit.study.floors import at_floor, floor_for
from evalkit.study.paired import BETTER, TIE
from evalkit.study.rank import PairTable, Ranking, cell_key, higher_is_better, n_groups, pareto_front, rank
from evalkit.study.task_cells import task_facets, task_label, varies

LABELS = {
    "fd": "FD",
    "fd_inf": "FD∞",
    "kid": "KID",
    "cmmd": "CMMD",
    "is": "IS",
    "clip_score": "CLIP score",
    "precision": "precision",
    "recall": "recall",
    "density": "density",
    "coverage": "coverage",
    "lpips_diversity": "LPIPS diversity",
    "lpips_paired": "LPIPS paired",
    "psnr": "PSNR",
    "ssim": "SSIM",
    "ms_ssim": "MS-SSIM",
    "vendi": "Vendi",
    "vendi_within": "Vendi within condition",
    "aesthetic": "aesthetic score",
    "hpsv2": "HPSv2",
    "image_reward": "ImageReward",
    "pick_score": "PickScore",
    "images_per_s": "images/s",
    "s_per_image": "s/image",
    "model_calls": "model calls/sample",
    "nfe": "NFE/image",
    "ms_per_model_call": "ms/model call",
    "peak_mem_mb": "peak memory (MB)",
}
Namer = Callable[[pd.Series], str]


def label(metric: str) -> str:
    """'FD' for ``fd``; 'FD (clip)' for the column ``fd@clip`` (fd measured on several extractors)."""
    row, extractor = split_key(metric)
    name = LABELS.get(row, row)
    return name if extractor is None else f"{name} ({extractor or 'no extractor'})"


def fmt(v: Any) -> str:
    """A number for people: 4 significant digits, thousands separated, '—' for missing."""
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return "—"
    if isinstance(v, str):
        return v
    v = float(v)
    if not math.isfinite(v):
        return str(v)
    if abs(v) >= 10000:
        return f"{v:,.0f}"
    if v == int(v) and abs(v) < 10000:
        return f"{int(v)}"
    return f"{v:.4g}"


def signed(v: float) -> str:
    """A difference with its sign, a real minus sign for negatives."""
    text = fmt(v)
    return text.replace("-", "−") if text.startswith("-") else f"+{text}" if math.isfinite(float(v)) else text


def percent(confidence: float) -> str:
    return f"{100 * float(confidence):g} %"


def diff_text(comp: dict[str, Any] | None, metric: str) -> str:
    """'ΔFD −2.1, 95 % CI [−6.3, 2]' for a comparison (a − b), saying which CI backs it."""
    if comp is None:
        return "no CI to tell them apart"
    d = f"Δ{label(metric)} {signed(comp['diff'])}"
    level = percent(comp.get("confidence", 0.95))
    lo, hi = (fmt(comp[k]).replace("-", "−") for k in ("ci_low", "ci_high"))
    if comp["basis"] == PAIRED:
        return f"{d}, {level} CI [{lo}, {hi}]"
    if comp["basis"] == UNPAIRED:
        return f"{d}, {level} CI [{lo}, {hi}] (unpaired: other seeds or conditions)"
    if comp["basis"] == SEPARATE:
        return f"{d}; their separate {level} CIs {'overlap' if comp['verdict'] == TIE else 'do not overlap'}"
    return f"{d}, no CI ({comp.get('note') or 'none stored'})" if comp["basis"] == NO_CI else d


def cell_namer(cells: pd.DataFrame, *, task: bool = True) -> Namer:
    """How a cell is named in sentences: its sampler, prefixed by run/model only when they vary, and followed by
    its task point (``ddim img2img st0.3``) when ``cells`` hold several (``task=False``: where the caller names
    the task point itself)."""
    multi_run = "run_id" in cells and cells["run_id"].nunique() > 1
    multi_model = "model" in cells and cells["model"].nunique() > 1
    multi_task = task and varies(cells)

    def name(row: pd.Series) -> str:
        parts = [str(row["run_id"])] if multi_run else []
        parts += [str(row["model"])] if multi_model else []
        text = " / ".join([*parts, str(row["sampler"])])
        point = task_label(row) if multi_task else ""
        return f"{text} {point}" if point else text

    return name


def floor_text(floor: pd.Series | None, metric: str) -> str:
    if floor is None:
        return ""
    return (
        f"the real-vs-real floor of {label(metric)} at N={int(floor['n'])} is {fmt(floor['median'])} "
        f"(range {fmt(floor['low'])}–{fmt(floor['high'])} over {int(floor['draws'])} draws)"
    )


def is_at_floor(row: pd.Series, metric: str, floors: pd.DataFrame | None) -> bool:
    floor = floor_for(floors, metric, row.get("n"), str(row.get("run_id", "")))
    hib = higher_is_better(metric)
    if floor is None or hib is None:
        return False
    lo, hi = row.get(f"{metric}_lo", math.nan), row.get(f"{metric}_hi", math.nan)
    return at_floor(float(row[metric]), float(lo), float(hi), floor, higher_is_better=hib)


def ranking_sentence(r: Ranking, metric: str, name: Namer, prefix: str) -> str:
    """'At 8 steps, X has the best FD: 20.8, ahead of Y (22.9; ΔFD −2.1, 95 % CI [−3.4, −0.9]).' when the CI
    backs it; otherwise 'At 8 steps, X ≈ Y by FD (20.8 vs 22.9): ΔFD −2.1, 95 % CI [−6.3, 2], a tie.'"""
    b, v = name(r.best), fmt(r.best[metric])
    if r.runner_up is None:
        return f"{prefix}, {b} is the only cell with a {label(metric)}: {v}."
    if r.confident:
        other, comp = r.runner_up
        return (
            f"{prefix}, {b} has the best {label(metric)}: {v}, ahead of {name(other)} "
            f"({fmt(other[metric])}; {diff_text(comp, metric)})."
        )
    first, comp = r.ties[0]
    if len(r.ties) == 1:
        return (
            f"{prefix}, {b} ≈ {name(first)} by {label(metric)} ({v} vs {fmt(first[metric])}): "
            f"{diff_text(comp, metric)}, a tie."
        )
    names = " ≈ ".join([b, *(name(c) for c, _ in r.ties)])
    values = ", ".join([v, *(fmt(c[metric]) for c, _ in r.ties)])
    return (
        f"{prefix}, {names} by {label(metric)} ({values}): none is confidently best "
        f"({b} against {name(first)}: {diff_text(comp, metric)})."
    )


def column_sentences(
    cells: pd.DataFrame, metric: str, pairs: PairTable, floors: pd.DataFrame | None = None, name: Namer | None = None
) -> list[str]:
    """The best cell at each step count (cells of one N and guidance) and, where ``cells`` hold several task points,
    each (``At 4 steps (img2img st0.3)``: only cells of one task point are ranked together), with its CI or the tie
    it is in."""
    name = name or cell_namer(cells)
    out = []
    several = varies(cells)
    columns = [(steps, point, c) for steps, col in cells.groupby("steps", sort=True) for point, c in task_facets(col)]
    for steps, point, col in columns:
        r = rank(col, metric, pairs)
        if r is None:
            continue
        text = ranking_sentence(r, metric, name, f"At {steps} steps" + (f" ({point})" if several and point else ""))
        floor = floor_for(floors, metric, r.best.get("n"), str(r.best.get("run_id", "")))
        if floor is not None and is_at_floor(r.best, metric, floors):
            text += (
                f" {name(r.best)} is at the real-vs-real floor ({label(metric)} {fmt(floor['median'])}, range "
                f"{fmt(floor['low'])}–{fmt(floor['high'])} at N={int(floor['n'])})."
            )
        out.append(text)
    return out


def budget_lines(
    cells: pd.DataFrame, metric: str, cost: str, unit: str, pairs: PairTable, name: Namer | None = None
) -> list[str]:
    """The Pareto frontier (one N) read as 'at ≤ X, use Y', a line per cost level: cells tied at one cost are
    named together (≈), and each step up says whether its CI shows a gain over the level below. Cells of several
    tasks get a frontier per task (its lines prefixed ``img2img:``): cells of two tasks are not compared."""
    name = name or cell_namer(cells)
    facets = task_facets(cells, by="task")
    if len(facets) > 1:
        return [
            f"{task}: {line}" for task, sub in facets for line in budget_lines(sub, metric, cost, unit, pairs, name)
        ]
    front = pareto_front(cells, cost, metric, pairs)
    lines, prev = [], None
    for level, group in front.groupby(cost, sort=True):
        best = group.iloc[0]  # pareto_front sorts each cost level best first
        text = f"≤ {fmt(level)} {unit}: " + " ≈ ".join(
            f"{name(r)} at {r['steps']} steps ({label(metric)} {fmt(r[metric])})" for _, r in group.iterrows()
        )
        if len(group) > 1:
            text += f" ({diff_text(pairs.get(metric, cell_key(best), cell_key(group.iloc[1])), metric)}: a tie)"
        if prev is not None:
            comp = pairs.get(metric, cell_key(best), cell_key(prev))
            where = f"{name(prev)} at {prev['steps']} steps"
            if comp is not None and comp["verdict"] == BETTER:
                text += f", better than {where} ({diff_text(comp, metric)})"
            else:
                text += f", ≈ {where} ({diff_text(comp, metric)}): not confidently better"
        lines.append(text)
        prev = best
    return lines


def headline(cells: pd.DataFrame, metric: str, pairs: PairTable, name: Namer | None = None) -> str:
    """Per N (and, in a suite of several tasks, per task: cells of two tasks are not compared): the best cell
    overall when a CI backs it (else the tie), and the cheapest cell."""
    name = name or cell_namer(cells)
    texts = []
    multi_n = len(n_groups(cells)) > 1
    groups = [(n, task, sub) for n, by_n in n_groups(cells) for task, sub in task_facets(by_n, by="task")]
    multi_task = len({task for _, task, _ in groups}) > 1
    for n, task, group in groups:
        r = rank(group, metric, pairs)
        if r is None:
            continue
        at_n = (f" for {task}" if multi_task and task else "") + (f" at N={n}" if multi_n else "")
        b = r.best
        where = f"{name(b)} at {b['steps']} steps, guidance {float(b['guidance']):g}"
        cost = f"{fmt(b.get('nfe'))} NFE, {fmt(b.get('s_per_image'))} s per image"
        if r.confident or r.runner_up is None:
            texts.append(f"Best {label(metric)} overall{at_n}: {where} ({fmt(b[metric])}; {cost}).")
        else:
            other, comp = r.ties[0]
            ties = f"{len(r.ties)} other {'cells tie' if len(r.ties) > 1 else 'cell ties'}"
            texts.append(
                f"No single best {label(metric)}{at_n}: {where} has the {_extreme(metric)} ({fmt(b[metric])}; {cost}), "
                f"but {ties} with it (closest: {name(other)} "
                f"at {other['steps']} steps, guidance {float(other['guidance']):g}: {diff_text(comp, metric)})."
            )
        texts.append(_cheapest(group, metric, name, at_n))
    return " ".join(t for t in texts if t)


def _extreme(metric: str) -> str:
    return "highest" if higher_is_better(metric) else "lowest"


def _cheapest(group: pd.DataFrame, metric: str, name: Namer, at_n: str) -> str:
    cheap = group.dropna(subset=["nfe", metric]) if "nfe" in group else group.iloc[:0]
    if cheap.empty:
        return ""
    c = cheap.sort_values(["nfe", metric], ascending=[True, not higher_is_better(metric)]).iloc[0]
    return (
        f"Cheapest{at_n}: {name(c)} at {c['steps']} steps, guidance {float(c['guidance']):g} "
        f"({fmt(c['nfe'])} NFE, {label(metric)} {fmt(c[metric])})."
    )
