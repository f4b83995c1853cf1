"""Built-in extractors. Importing this package registers them (see :mod:`evalkit.features.base`).

Each module registers a factory by name and imports its heavy library (clean-fid, torch-fidelity,
pytorch-fid, open_clip, lpips) only when the extractor is built, so ``import evalkit.features`` works
without them and a missing library gives a clear error naming the package to install.
"""

import importlib
import warnings

from evalkit.features.base import (  # noqa: F401
    Extractor,
    available_extractors,
    build_extractor,
    register_extractor,
)

_BUILTIN = ("mnist_net", "inception", "clip", "lpips_net")

for _mod in _BUILTIN:
    try:
        importlib.import_module(f"evalkit.features.{_mod}")
    except ModuleNotFoundError as _err:  # a module not written yet, or a missing optional dependency
        if _err.name != f"evalkit.features.{_mod}":
            warnings.warn(f"extractor module evalkit.features.{_mod} unavailable: {_err}", stacklevel=2)
