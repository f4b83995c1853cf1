"""Pairwise L2 distances between feature sets, in row chunks so that memory stays bounded (O(chunk × N)) for large
sets: the k-NN metrics (precision/recall, density/coverage), memorisation's nearest training image, the energy
distance. Gram form ‖a‖² + ‖b‖² − 2 a·b in float64, clipped at 0 (it rounds below 0 for near-copies)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

CHUNK_ELEMS = 1 << 24  # distance-matrix entries per chunk (128 MiB in float64)


def sq_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared L2 distances (len(a), len(b)), clipped at 0."""
    d2 = np.einsum("ij,ij->i", a, a)[:, None] + np.einsum("ij,ij->i", b, b)[None, :] - 2.0 * (a @ b.T)
    return np.maximum(d2, 0.0)


def distance_chunks(a: np.ndarray, b: np.ndarray, *, squared: bool = False) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (row slice of ``a``, L2 distances of those rows to all of ``b``; squared ones with ``squared``)."""
    step = max(1, CHUNK_ELEMS // max(1, b.shape[0]))
    for start in range(0, a.shape[0], step):
        rows = slice(start, min(start + step, a.shape[0]))
        d2 = sq_distances(a[rows], b)
        yield rows, d2 if squared else np.sqrt(d2)
