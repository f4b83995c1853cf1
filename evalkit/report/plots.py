"""Speed–quality plots (matplotlib, no pyplot state). Each function returns a :class:`Plot`: the figure
and a plain dict of what it drew, so tests can check the lines without reading pixels::

    {"title", "xlabel", "ylabel",
     "panels": {panel title: {"lines": {label: {"x": [...], "y": [...], "err": [[low...], [high...]] | None,
                                                "points": [point labels]}},
                              "frontier": {"x": [...], "y": [...], "points": [...]} (Pareto plots only),
                              "floor": {"n", "low", "high", "median"} (Pareto plots, where the run has floors),
                              "floors": [{"n", "low", "high", "median"}, ...] (steps plot)}}}
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # figures without pyplot: no global state, no GUI backend

from evalkit.report.figures import legend, log_if_wide, panels, plain_text
from evalkit.report.frontier import pareto_front
from evalkit.report.tables import direction_word, label
from evalkit.study.floors import floor_for
from evalkit.study.rank import PairTable
from evalkit.study.task_cells import task_columns, task_label

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*", "<", ">"]
DASHES = ["-", "--", ":", "-."]


class Plot(NamedTuple):
    figure: Figure
    data: dict[str, Any]


# -- shared helpers --------------------------------------------------------------------------------
def line_keys(cells: pd.DataFrame) -> pd.Series:
    """Each cell's line label: the sampler, prefixed by run and model and suffixed by N only when the data holds
    several (cells of another N are never joined into one line), and by the task point (``img2img st0.3``) where
    the data has task columns (cells of another task or strength are never joined either)."""
    key = cells["sampler"].astype(str)
    for col in ("model", "run_id"):
        if cells[col].nunique() > 1:
            key = cells[col].astype(str) + " / " + key
    if "n" in cells and cells["n"].nunique() > 1:
        key = key + " · N=" + cells["n"].astype("Int64").astype(str)
    tasks = task_labels(cells)
    if tasks is not None:
        key = key + tasks.map(lambda t: f" · {t}" if t else "")
    return key


def task_labels(cells: pd.DataFrame) -> pd.Series | None:
    """Each cell's task point as text (``img2img st0.3``; "" for a cell without a task), or None where the data
    has no task columns."""
    if not task_columns(cells.columns):
        return None
    return pd.Series([task_label(r) for r in cells.to_dict("records")], index=cells.index, dtype=object)


def _facets(cells: pd.DataFrame) -> list[tuple[str, Any, pd.DataFrame]]:
    """(panel title, N, cells) per guidance scale, and per N where the data holds several, and per task point
    where it has tasks: a panel (and its frontier) never mixes N, nor tasks or strengths."""
    multi_n = "n" in cells and cells["n"].nunique() > 1
    tasks = task_labels(cells)
    out = []
    for g, facet in cells.groupby("guidance", sort=True):
        for n, sub in facet.groupby(_n_key(facet), sort=True, dropna=False):
            title = f"guidance {_g(g)}" + (f" · N={n}" if multi_n else "")
            parts = [("", sub)] if tasks is None else list(sub.groupby(tasks.loc[sub.index], sort=False))
            out += [(f"{title} · {t}" if t else title, n, part) for t, part in parts]
    return out


def _ncols(n_panels: int, cells: pd.DataFrame) -> int | None:
    """Panels per row: all in one row, except a task suite's (a panel per task point) at most 3 to a row."""
    return min(n_panels, 3) if task_columns(cells.columns) else None


def _n_key(cells: pd.DataFrame) -> pd.Series:
    return cells["n"] if "n" in cells else pd.Series(-1, index=cells.index)


def _floor_band(
    ax: Axes, floors: pd.DataFrame | None, metric: str, n: Any, run_ids: Any, *, axis: str = "y"
) -> dict[str, Any] | None:
    """Shade the real-vs-real floor of ``metric`` at N=``n`` (range over draws, median dotted); its numbers.
    Drawn only where every run of ``run_ids`` (the panel's) has that same floor: one run's floor is not
    another's (another reference or extractor)."""
    found = [floor_for(floors, metric, n, str(r)) for r in dict.fromkeys(run_ids)]
    if not found or any(f is None for f in found):
        return None
    f = found[0]
    if any(tuple(g[["low", "high", "median"]]) != tuple(f[["low", "high", "median"]]) for g in found[1:]):
        return None
    lo, hi, med = float(f["low"]), float(f["high"]), float(f["median"])
    text = f"real-vs-real floor (N={int(f['n'])})"
    span, line = (ax.axhspan, ax.axhline) if axis == "y" else (ax.axvspan, ax.axvline)
    span(lo, hi, color="#888888", alpha=0.18, lw=0, label=text, zorder=0)
    line(med, color="#666666", ls=":", lw=1, zorder=0)
    return {"n": int(f["n"]), "low": lo, "high": hi, "median": med}


def _ns(cells: pd.DataFrame) -> list[Any]:
    return sorted(cells["n"].dropna().unique())


def _runs_at(cells: pd.DataFrame, metric: str, n: Any) -> pd.Series:
    """The runs with a value of ``metric`` at N = ``n``."""
    return cells.loc[(cells["n"] == n) & cells[metric].notna(), "run_id"]


def _style(cells: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """Colour and marker per line label, the same in every plot of a report."""
    keys = list(dict.fromkeys(line_keys(cells)))
    return {k: (COLORS[i % len(COLORS)], MARKERS[i % len(MARKERS)]) for i, k in enumerate(keys)}


def _longest(style: dict[str, Any]) -> int:
    return max((len(k) for k in style), default=0)


def _errors(sub: pd.DataFrame, metric: str) -> np.ndarray | None:
    """(2, n) error-bar offsets: the confidence interval where the run has one, else ±std."""
    lo, hi, sd = (sub.get(f"{metric}{s}") for s in ("_lo", "_hi", "_std"))
    v = sub[metric].to_numpy(float)
    if lo is not None and hi is not None and np.isfinite(lo.to_numpy(float)).any():
        err = np.vstack([v - lo.to_numpy(float), hi.to_numpy(float) - v])
    elif sd is not None and np.isfinite(sd.to_numpy(float)).any():
        s = sd.to_numpy(float)
        err = np.vstack([s, s])
    else:
        return None
    return np.where(np.isfinite(err), np.clip(err, 0, None), 0.0)


def _draw_line(
    ax: Axes,
    sub: pd.DataFrame,
    x: str,
    y: str,
    key: str,
    style: tuple[str, str],
    *,
    point_labels: list[str],
    dash: str = "-",
    xerr: bool = False,
) -> dict[str, Any]:
    err = _errors(sub, y)
    xe = _errors(sub, x) if xerr else None
    xs, ys = sub[x].to_numpy(float), sub[y].to_numpy(float)
    ax.errorbar(
        xs,
        ys,
        yerr=err,
        xerr=xe,
        color=style[0],
        marker=style[1],
        ls=dash,
        lw=1.4,
        ms=5,
        capsize=2,
        elinewidth=0.8,
        label=key,
    )
    for xv, yv, text in zip(xs, ys, point_labels):
        if text:
            ax.annotate(text, (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize=7, color=style[0])
    return {
        "x": xs.tolist(),
        "y": ys.tolist(),
        "err": err.tolist() if err is not None else None,
        "points": point_labels,
    }


def _g(v: float) -> str:
    return f"{v:g}"


# -- the plots -------------------------------------------------------------------------------------
def pareto_plot(
    cells: pd.DataFrame,
    metric: str,
    cost: str = "s_per_image",
    pairs: PairTable | None = None,
    floors: pd.DataFrame | None = None,
) -> Plot | None:
    """Quality against cost, one panel per guidance scale (and N), a line per sampler through its step
    counts (points labelled by steps), the Pareto frontier dashed with circled points — a point is off it only
    where a cell at least as cheap is confidently better — and the real-vs-real floor as a grey band."""
    if metric not in cells or cost not in cells or cells[[metric, cost]].dropna().empty:
        return None
    style = _style(cells)
    facets = _facets(cells)
    fig, axes = panels(len(facets), legend_chars=_longest(style), ncols=_ncols(len(facets), cells))
    data: dict[str, Any] = {
        "title": f"{label(metric)} vs {label(cost)}",
        "xlabel": label(cost),
        "ylabel": f"{label(metric)} ({direction_word(metric)})",
        "panels": {},
    }
    keys = line_keys(cells)
    for ax, (title, n, facet) in zip(axes, facets):
        panel: dict[str, Any] = {"lines": {}}
        for key, sub in facet.groupby(keys.loc[facet.index], sort=False):
            sub = sub.dropna(subset=[metric, cost]).sort_values(cost)
            if sub.empty:
                continue
            panel["lines"][key] = _draw_line(
                ax, sub, cost, metric, key, style[key], point_labels=[str(s) for s in sub["steps"]]
            )
        front = pareto_front(facet, cost, metric, pairs)
        if not front.empty:
            fx, fy = front[cost].to_numpy(float), front[metric].to_numpy(float)
            ax.plot(fx, fy, drawstyle="steps-post", color="black", ls="--", lw=1, alpha=0.6, label="Pareto frontier")
            ax.scatter(fx, fy, s=130, facecolors="none", edgecolors="black", linewidths=1, zorder=3)
            names = keys.loc[front.index]
            panel["frontier"] = {
                "x": fx.tolist(),
                "y": fy.tolist(),
                "points": [f"{k} @ {s}" for k, s in zip(names, front["steps"])],
            }
        band = _floor_band(ax, floors, metric, n, facet.dropna(subset=[metric])["run_id"])
        if band:
            panel["floor"] = band
        log_if_wide(ax, facet[cost])
        ax.set(title=title, xlabel=data["xlabel"], ylabel=data["ylabel"])
        ax.grid(alpha=0.3)
        data["panels"][title] = panel
    legend(fig, axes)
    plain_text(fig)
    return Plot(fig, data)


def guidance_plot(cells: pd.DataFrame, quality: str, other: str) -> Plot | None:
    """``other`` (IS or CLIP score) against ``quality`` (FD) as guidance varies: one panel per step
    count, a line per sampler through its guidance scales (points labelled g=…)."""
    if cells["guidance"].nunique() < 2 or quality not in cells or other not in cells:
        return None
    style = _style(cells)
    facets = list(cells.groupby("steps", sort=True))
    fig, axes = panels(len(facets), legend_chars=_longest(style))
    data: dict[str, Any] = {
        "title": f"guidance sweep: {label(other)} vs {label(quality)}",
        "xlabel": f"{label(quality)} ({direction_word(quality)})",
        "ylabel": f"{label(other)} ({direction_word(other)})",
        "panels": {},
    }
    for ax, (steps, facet) in zip(axes, facets):
        panel: dict[str, Any] = {"lines": {}}
        for key, sub in facet.groupby(line_keys(cells).loc[facet.index], sort=False):
            sub = sub.dropna(subset=[quality, other]).sort_values("guidance")
            if sub.empty:
                continue
            panel["lines"][key] = _draw_line(
                ax,
                sub,
                quality,
                other,
                key,
                style[key],
                xerr=True,
                point_labels=[f"g={_g(g)}" for g in sub["guidance"]],
            )
        title = f"{steps} steps"
        ax.set(title=title, xlabel=data["xlabel"], ylabel=data["ylabel"])
        ax.grid(alpha=0.3)
        data["panels"][title] = panel
    legend(fig, axes)
    plain_text(fig)
    return Plot(fig, data)


def steps_plot(cells: pd.DataFrame, metrics: list[str], floors: pd.DataFrame | None = None) -> Plot | None:
    """Each metric against step count: one panel per metric, a line per sampler (colour) and
    guidance scale (dash), the real-vs-real floor of each N as a grey band."""
    metrics = [m for m in metrics if m in cells and cells[m].notna().any()]
    if not metrics:
        return None
    style = _style(cells)
    guidances = sorted(cells["guidance"].dropna().unique())
    fig, axes = panels(
        len(metrics), legend_chars=_longest(style) + 6, ncols=min(3, len(metrics)), panel_w=3.6, panel_h=2.6
    )
    data: dict[str, Any] = {"title": "metrics vs steps", "xlabel": "steps", "ylabel": "metric value", "panels": {}}
    keyed = cells.assign(_key=line_keys(cells))
    for ax, metric in zip(axes, metrics):
        panel: dict[str, Any] = {"lines": {}}
        for (key, g), sub in keyed.groupby(["_key", "guidance"], sort=False):
            sub = sub.dropna(subset=[metric]).sort_values("steps")
            if sub.empty:
                continue
            name = f"{key} · g={_g(g)}" if len(guidances) > 1 else key
            dash = DASHES[guidances.index(g) % len(DASHES)]
            panel["lines"][name] = _draw_line(
                ax,
                sub.assign(steps=sub["steps"].astype(float)),
                "steps",
                metric,
                name,
                style[key],
                point_labels=[""] * len(sub),
                dash=dash,
            )
        bands = (
            [_floor_band(ax, floors, metric, n, _runs_at(cells, metric, n)) for n in _ns(cells)] if "n" in cells else []
        )
        if any(bands):
            panel["floors"] = [b for b in bands if b]
        ax.set_xscale("log", base=2)
        ticks = sorted(cells["steps"].dropna().unique())
        ax.set_xticks([float(t) for t in ticks], [str(t) for t in ticks])
        ax.minorticks_off()
        ax.set(title=f"{label(metric)} ({direction_word(metric)})", xlabel="steps")
        ax.grid(alpha=0.3)
        data["panels"][label(metric)] = panel
    legend(fig, axes)
    plain_text(fig)
    return Plot(fig, data)


def throughput_plot(cells: pd.DataFrame) -> Plot | None:
    """Images per second as grouped bars: one panel per guidance, a group per step count, a bar per sampler."""
    cells = cells.copy()
    if "images_per_s" not in cells or cells["images_per_s"].isna().all():
        if "s_per_image" not in cells or cells["s_per_image"].isna().all():
            return None
        cells["images_per_s"] = 1.0 / cells["s_per_image"]
    style = _style(cells)
    facets = list(cells.groupby("guidance", sort=True))
    fig, axes = panels(len(facets), legend_chars=_longest(style))
    data: dict[str, Any] = {
        "title": "throughput",
        "xlabel": "steps",
        "ylabel": "images/s (higher is better)",
        "panels": {},
    }
    for ax, (g, facet) in zip(axes, facets):
        panel: dict[str, Any] = {"lines": {}}
        steps = sorted(facet["steps"].dropna().unique())
        groups = list(facet.groupby(line_keys(cells).loc[facet.index], sort=False))
        width = 0.8 / max(len(groups), 1)
        for i, (key, sub) in enumerate(groups):
            sub = sub.set_index("steps").reindex(steps)
            xs = np.arange(len(steps)) + (i - (len(groups) - 1) / 2) * width
            ys = sub["images_per_s"].to_numpy(float)
            ax.bar(xs, ys, width=width, color=style[key][0], label=key)
            panel["lines"][key] = {
                "x": [int(s) for s in steps],
                "y": ys.tolist(),
                "err": None,
                "points": [str(s) for s in steps],
            }
        ax.set_xticks(np.arange(len(steps)), [str(s) for s in steps])
        title = f"guidance {_g(g)}"
        ax.set(title=title, xlabel="steps", ylabel=data["ylabel"])
        ax.grid(alpha=0.3, axis="y")
        data["panels"][title] = panel
    legend(fig, axes)
    plain_text(fig)
    return Plot(fig, data)


# -- output ----------------------------------------------------------------------------------------
def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = 90) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi, metadata={"Software": None} if fmt == "png" else None)
    return buf.getvalue()


def png_data_uri(fig: Figure, dpi: int = 90) -> str:
    """The figure as an inline PNG (modest dpi keeps the report small)."""
    return "data:image/png;base64," + base64.b64encode(figure_bytes(fig, "png", dpi)).decode("ascii")


def save_figure(fig: Figure, stem: str | Path, dpi: int = 110) -> list[Path]:
    """PNG and SVG files ``<stem>.png`` / ``<stem>.svg``."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for fmt in ("png", "svg"):
        path = stem.with_suffix(f".{fmt}")
        path.write_bytes(figure_bytes(fig, fmt, dpi))
        out.append(path)
    return out
