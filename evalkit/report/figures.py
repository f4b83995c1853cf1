"""Figure scaffolding shared by the report's plots: panel grids with room for the legend, one legend per
figure, and user text drawn as plain text (no mathtext, no LaTeX)."""

from __future__ import annotations

import math

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure  # figures without pyplot: no global state, no GUI backend


def panels(
    n_panels: int, *, legend_chars: int, ncols: int | None = None, panel_w: float = 4.0, panel_h: float = 3.0
) -> tuple[Figure, list[Axes]]:
    """Panels in a grid with a right margin wide enough for the legend's longest label. Margins are
    set by hand in inches: constrained layout would draw every figure twice (most of the run time)."""
    ncols = ncols or n_panels
    nrows = math.ceil(n_panels / ncols)
    legend_w = max(1.9, 0.6 + 0.065 * legend_chars)  # ~0.065 in per 8 pt character
    left, bottom, top, gap_w, gap_h = 0.7, 0.55, 0.35, 0.75, 0.75
    width = left + ncols * panel_w + (ncols - 1) * gap_w + legend_w
    height = bottom + nrows * panel_h + (nrows - 1) * gap_h + top
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(
        left=left / width,
        right=1 - legend_w / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=gap_w / panel_w,
        hspace=gap_h / panel_h,
    )
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes[:n_panels]


def log_if_wide(ax: Axes, values: pd.Series, axis: str = "x") -> None:
    v = values.dropna().to_numpy(float)
    if len(v) and v.min() > 0 and v.max() / v.min() >= 8:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def legend(fig: Figure, axes: list[Axes]) -> None:
    handles, labels = {}, {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
            labels.setdefault(lab, lab)
    if handles:
        right = fig.subplotpars.right
        fig.legend(
            list(handles.values()),
            list(labels.values()),
            loc="upper left",
            bbox_to_anchor=(right + 0.01, 0.97),
            fontsize=8,
            frameon=False,
        )


def plain_text(fig: Figure) -> None:
    """Titles, axis labels, point labels and legend entries drawn as plain text: they hold user data (sampler
    labels, model and run names, metric names), and matplotlib would parse ``$...$`` in them as mathtext (an
    unbalanced ``$\\foo{$`` raised ValueError and stopped the report) or hand them to LaTeX under
    ``text.usetex``. Tick labels keep their formatters' mathtext (e.g. log-axis powers)."""
    texts = []
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]  # the plots set centre titles only
        if ax.get_legend() is not None:
            texts += [*ax.get_legend().get_texts(), ax.get_legend().get_title()]
    for legend in fig.legends:
        texts += [*legend.get_texts(), legend.get_title()]
    for text in texts + [*fig.texts]:
        text.set_parse_math(False)
        text.set_usetex(False)
