"""The CI gate: baselines, the one verdict function, markdown/JUnit rendering, commands, pytest plugin.

- :mod:`evalkit.gate.baseline`: the baseline file (:class:`Baseline`), its tolerance rule, building one;
- :mod:`evalkit.gate.compare`: compatibility, paired bootstrap CIs, :func:`judge`/:func:`verdict`, :func:`compare`;
- :mod:`evalkit.gate.render`: markdown and JUnit; :mod:`evalkit.gate.commands`: ``evalkit baseline``/``check``.

Names are imported on first use, so ``evalkit --help`` does not pay for scipy and the metrics.
"""

from __future__ import annotations

from evalkit.lazy import lazy_exports

_EXPORTS = {
    "Baseline": "baseline",
    "BaselineEntry": "baseline",
    "CheckConfigError": "baseline",
    "Tolerance": "baseline",
    "build_baseline": "baseline",
    "effective_k": "baseline",
    "CheckReport": "compare",
    "Comparison": "compare",
    "judge": "compare",
    "verdict": "compare",
    "PASS": "compare",
    "IMPROVED": "compare",
    "REGRESSION": "compare",
    "ERROR": "compare",
    "markdown_report": "render",
    "junit_xml": "render",
    "run_check": "commands",
    "make_baseline": "commands",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
