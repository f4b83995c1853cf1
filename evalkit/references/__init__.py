"""Reference sets (the real images metrics compare against) and their cached features.

Names load on first use (the sets import torch), so ``evalkit --help`` and ``evalkit stats --help`` do not
pay for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from evalkit.lazy import lazy_exports

if TYPE_CHECKING:
    from evalkit.references.cache import (
        cache_key,
        cache_path,
        default_cache_dir,
        reference_features,
        save_reference_stats,
    )
    from evalkit.references.names import BUILTIN_DATASETS
    from evalkit.references.open import open_reference
    from evalkit.references.sets import (
        ArrayReference,
        FileReference,
        ReferenceSet,
        ReferenceSetError,
    )
    from evalkit.references.stats import StatsReference

_EXPORTS = {
    "cache_key": "cache",
    "cache_path": "cache",
    "default_cache_dir": "cache",
    "reference_features": "cache",
    "save_reference_stats": "cache",
    "open_reference": "open",
    "BUILTIN_DATASETS": "names",
    "ArrayReference": "sets",
    "FileReference": "sets",
    "ReferenceSet": "sets",
    "ReferenceSetError": "sets",
    "StatsReference": "stats",
}
__all__ = [
    "BUILTIN_DATASETS",
    "ArrayReference",
    "FileReference",
    "ReferenceSet",
    "ReferenceSetError",
    "StatsReference",
    "cache_key",
    "cache_path",
    "default_cache_dir",
    "open_reference",
    "reference_features",
    "save_reference_stats",
]

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
