"""Reports from run folders: tidy tables, pivots, speed–quality plots, a self-contained HTML file.

Reads the run store only; never runs a suite::

    from evalkit.report import load_results, pivot, write_report
    df = load_results(["runs/smoke"])          # tidy: one row per cell × metric
    pivot(df, "fd")                            # (sampler, N) × (guidance, steps)
    write_report(["runs/smoke"], "reports/smoke.html", baseline="baselines/ci.json")

Names are imported on first use, so ``evalkit --help`` does not pay for matplotlib and jinja2.
"""

from __future__ import annotations

from evalkit.lazy import lazy_exports

_EXPORTS = {
    "load_results": "data",
    "load_study": "data",
    "pivot": "tables",
    "pivots": "tables",
    "cell_table": "tables",
    "export": "tables",
    "to_markdown": "tables",
    "higher_is_better": "tables",
    "pareto_front": "frontier",
    "best_per_steps": "frontier",
    "Plot": "plots",
    "pareto_plot": "plots",
    "guidance_plot": "plots",
    "steps_plot": "plots",
    "throughput_plot": "plots",
    "load_baseline": "baseline",
    "deltas": "baseline",
    "render_report": "html",
    "write_report": "html",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
