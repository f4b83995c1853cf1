"""A reference given as precomputed Gaussian statistics: ``mu``/``sigma`` in an ``.npz`` (clean-fid's precomputed and
custom statistics, pytorch-fid's ``--save-stats``, evalkit's ``evalkit stats --out``) or torch-fidelity's cached
``...-stat-fid-2048.pt`` (a ``torch.save`` dict, read with ``weights_only=True``: numpy arrays and nothing else)."""

from __future__ import annotations

import re
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
        raw = _read_torch_stats(path) if is_torch_file(path) else _read_npz(path)
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

    @property
    def dims(self) -> dict[str, int]:
        """The feature dimension of each output the file has statistics of (``features`` for plain mu/sigma)."""
        return {k[: -len(".mu")]: int(np.asarray(v).shape[0]) for k, v in self.stats.items() if k.endswith(".mu")}

    def describe(self) -> dict:
        return {**super().describe(), "source": "stats", "path": str(self.path), "dims": self.dims, **self.meta}

    def __len__(self) -> int:
        return self.n

    def iter_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        raise ReferenceSetError(f"reference {self.name!r} is a statistics file ({self.path}); it has no images")


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as err:  # truncated / corrupt / pickled
        raise ReferenceSetError(
            f"cannot read reference statistics {path} (corrupt, truncated or not an .npz of plain arrays): {err}"
        ) from err


def is_torch_file(path: Path) -> bool:
    """A ``torch.save`` archive (a zip holding ``<name>/data.pkl``), as torch-fidelity caches statistics."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/data.pkl") for n in zf.namelist())


def _read_torch_stats(path: Path) -> dict[str, np.ndarray]:
    """torch-fidelity's ``{"mu": ndarray, "sigma": ndarray}``: unpickled with ``weights_only=True`` and numpy's array
    reconstruction allowed (plain arrays only: any other object in the file is refused before it is built)."""
    multiarray = (np._core if hasattr(np, "_core") else np.core).multiarray  # numpy 2 / numpy 1
    allowed = [multiarray._reconstruct, np.ndarray, np.dtype, *{type(np.dtype(t)) for t in ("f4", "f8", "i8", "u1")}]
    try:
        with torch.serialization.safe_globals(allowed):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # an unpickling error names the refused global
        refused = re.search(r"GLOBAL ([\w.]+)", str(err))
        why = f"it holds {refused.group(1)!r}, which evalkit does not unpickle" if refused else _first_line(err)
        raise ReferenceSetError(
            f"cannot read reference statistics {path} as torch-fidelity statistics (a torch.save file of mu/sigma "
            f"arrays): {why}"
        ) from None
    if not isinstance(obj, dict):
        raise ReferenceSetError(f"reference statistics {path} hold a {type(obj).__name__}, expected a dict of mu/sigma")
    return {str(k): v.numpy() if isinstance(v, torch.Tensor) else np.asarray(v) for k, v in obj.items()}


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:200]
