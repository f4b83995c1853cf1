"""A reference given as precomputed Gaussian statistics (a clean-fid / pytorch-fid style ``.npz``)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from evalkit.references.sets import ReferenceSet, ReferenceSetError
from evalkit.store import sha256_file

SYMMETRY_RTOL = 1e-5  # |Σ - Σᵀ| relative to max |Σ| (float32 files round at ~1e-7)
PSD_RTOL = 1e-6  # eigenvalues down to -PSD_RTOL × max |λ| are rounding (a covariance from N < d samples has zeros)


def gaussian_problem(mu: np.ndarray, sigma: np.ndarray | None) -> str | None:
    """What makes (mu, sigma) unusable as a Gaussian for the Fréchet distance, or None.

    sigma must be a finite symmetric (d, d) matrix for a finite mu of length d, and positive semi-definite up to
    rounding: the smallest eigenvalue at least ``-PSD_RTOL × max |λ|``. A Cholesky factorisation of
    Σ + PSD_RTOL·||Σ||_F·I (the Frobenius norm bounds max |λ|) accepts almost every file in a fraction of a second
    at d = 2048 (an eigendecomposition takes ~10 s on 2 cores); only a matrix it rejects pays for the exact test.
    """
    if sigma is None:
        return "mu without sigma"
    mu, sigma = np.asarray(mu), np.asarray(sigma)
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        d = mu.shape[0] if mu.ndim == 1 else "d"
        return f"mu has shape {mu.shape} and sigma {sigma.shape}; expected mu (d,) and sigma ({d}, {d})"
    if not (np.issubdtype(mu.dtype, np.number) and np.issubdtype(sigma.dtype, np.number)):
        return f"mu ({mu.dtype}) and sigma ({sigma.dtype}) must be numbers"
    for name, arr in (("mu", mu), ("sigma", sigma)):
        if not np.isfinite(arr).all():
            return f"{name} holds {int((~np.isfinite(arr)).sum())} NaN/Inf values"
    s = sigma.astype(np.float64)
    scale = float(np.abs(s).max())
    asym = float(np.abs(s - s.T).max())
    if asym > SYMMETRY_RTOL * scale:
        return f"sigma is not symmetric (max |Σ - Σᵀ| = {asym:.3g}, max |Σ| = {scale:.3g})"
    tol = PSD_RTOL * float(np.linalg.norm(s))
    try:
        np.linalg.cholesky((s + s.T) / 2 + tol * np.eye(len(s)))
    except np.linalg.LinAlgError:  # the exact test: smallest eigenvalue against max |λ|
        lam = np.linalg.eigvalsh((s + s.T) / 2)
        if lam[0] >= -PSD_RTOL * float(np.abs(lam).max()):
            return None
        return (
            f"sigma is not positive semi-definite (smallest eigenvalue {lam[0]:.3g}, largest |λ| "
            f"{float(np.abs(lam).max()):.3g}): not a covariance matrix"
        )
    return None


class StatsReference(ReferenceSet):
    """Precomputed Gaussian statistics (``mu``/``sigma``, as clean-fid and pytorch-fid write them, or
    ``<output>.mu``/``<output>.sigma``). Serves FD only; optional keys ``extractor``, ``mode``,
    ``weights_id`` are checked against the extractor asked for."""

    def __init__(self, path: Path, name: str | None = None) -> None:
        if not path.is_file():
            raise ReferenceSetError(f"reference statistics file does not exist: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                raw = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:  # truncated / corrupt / pickled
            raise ReferenceSetError(
                f"cannot read reference statistics {path} (corrupt, truncated or not an .npz of plain arrays): {err}"
            ) from err
        stats = {}
        for k, v in raw.items():
            if k in ("mu", "sigma"):
                stats[f"features.{k}"] = v
            elif k.endswith((".mu", ".sigma", ".n")):
                stats[k] = v
        if not any(k.endswith(".mu") for k in stats):
            raise ReferenceSetError(f"reference statistics {path} hold no 'mu'/'sigma' arrays (keys: {sorted(raw)})")
        for key in sorted(k for k in stats if k.endswith(".mu")):
            problem = gaussian_problem(stats[key], stats.get(key[: -len("mu")] + "sigma"))
            if problem:
                raise ReferenceSetError(f"reference statistics {path} are unusable ({key[:-3]}): {problem}")
        self.name = name or path.stem
        self.path = path
        self.stats = stats
        self.meta = {k: str(raw[k]) for k in ("extractor", "mode", "weights_id") if k in raw}
        self.n = int(raw["n"]) if "n" in raw else int(stats.get("features.n", 0))
        self._fingerprint = sha256_file(path)

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def __len__(self) -> int:
        return self.n

    def iter_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        raise ReferenceSetError(f"reference {self.name!r} is a statistics file ({self.path}); it has no images")
