"""Reference sets (the real images metrics compare against) and their cached features."""

from evalkit.references.cache import (
    cache_key,
    cache_path,
    default_cache_dir,
    reference_features,
    save_reference_stats,
)
from evalkit.references.open import open_reference
from evalkit.references.sets import (
    BUILTIN_DATASETS,
    ArrayReference,
    FileReference,
    ReferenceSet,
    ReferenceSetError,
)
from evalkit.references.stats import StatsReference

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
