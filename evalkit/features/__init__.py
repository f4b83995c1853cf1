"""Built-in extractors. Importing this package declares them by name (see :meth:`evalkit.registry.Registry.declare`).

``evalkit list`` and suite validation see the names without importing torch; the module behind a name is
imported when the extractor is looked up (``build_extractor``), and it registers the factory itself (see
:mod:`evalkit.features.base`). Each module imports its heavy library (clean-fid, torch-fidelity, pytorch-fid,
open_clip, lpips) only when the extractor is built, so a missing library gives a clear error naming the
package to install. The names below are the ones each module registers (``tests/test_startup.py`` checks).
"""

from __future__ import annotations

from evalkit.lazy import lazy_exports
from evalkit.registry import EXTRACTORS

BUILTIN: dict[str, tuple[str, ...]] = {
    "mnist_net": ("mnist-net",),
    "inception": ("inception", "inception-clean", "inception-legacy_tensorflow", "inception-legacy_pytorch"),
    "clip": ("clip", "clip-vit-l14"),
    "lpips_net": ("lpips-alex", "lpips-vgg", "lpips-squeeze"),
    "pixels": ("pixels",),
    "dinov2": ("dinov2-vit-l14", "dinov2-vit-b14"),
    "mae": ("mae-vit-l16",),
    "hpsv2": ("hpsv2",),
    "pick_score": ("pick_score",),
    "image_reward": ("image_reward",),
}
for _module, _names in BUILTIN.items():
    for _name in _names:
        EXTRACTORS.declare(_name, f"evalkit.features.{_module}")

_EXPORTS = {  # from evalkit.features.base, which imports torch: loaded on first use
    "Extractor": "base",
    "available_extractors": "base",
    "build_extractor": "base",
    "register_extractor": "base",
}
__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
