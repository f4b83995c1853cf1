"""evalkit: evaluation and benchmarking harness for diffusion image models.

The Python API is :mod:`evalkit.api` (``from evalkit import api``); ``evalkit.score``, ``evalkit.load_results`` and
``evalkit.compare`` are its functions, loaded on first use so that ``import evalkit`` stays light (``evalkit.run``
is the runner's package: its function is ``evalkit.api.run``).
"""

from evalkit.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {"score": "api", "load_results": "api", "compare": "api"}  # evalkit.api: imported on first use

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
