"""A reference given as precomputed Gaussian statistics (a clean-fid / pytorch-fid style ``.npz``)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from evalkit.references.sets import ReferenceSet, ReferenceSetError
from evalkit.store import sha256_file


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
