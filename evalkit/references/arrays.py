"""Images stored as one uint8 array in an ``.npz`` (``np.savez`` / ``np.savez_compressed``), streamed in batches.

The array is the one named ``images``, else the file's only array (``arr_0`` when saved unnamed); its layout is
``(N, H, W, 3)``, ``(N, 3, H, W)``, ``(N, H, W, 1)`` or ``(N, H, W)`` (gray), as
:func:`~evalkit.references.sets.as_nchw` reads it. Rows are read straight from the archive member (decompressed as
they stream), never the whole array at once; the fingerprint is the sha256 of the member's bytes and the array's
shape. A file holding ``mu``/``sigma`` is statistics, not images (``{"stats": file}``).
"""

from __future__ import annotations

import contextlib
import hashlib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from evalkit.references.sets import ReferenceSet, ReferenceSetError, as_nchw

IMAGES_KEY = "images"


def npz_keys(path: Path) -> list[str]:
    """The array names of an ``.npz`` (empty when it is not a zip archive)."""
    if not zipfile.is_zipfile(path):
        return []
    with zipfile.ZipFile(path) as zf:
        return [n[: -len(".npy")] for n in zf.namelist() if n.endswith(".npy")]


def is_stats_file(path: Path) -> bool:
    """An ``.npz`` of Gaussian statistics (``mu``/``sigma``, or ``<output>.mu``) rather than images."""
    return any(k == "mu" or k.endswith(".mu") for k in npz_keys(path))


class NpzImages(ReferenceSet):
    """uint8 images in one array of an ``.npz``, streamed (module docstring)."""

    def __init__(self, path: Path, *, samples: int | None = None, name: str | None = None) -> None:
        if not path.is_file():
            raise ReferenceSetError(f"reference path does not exist: {path}")
        keys = npz_keys(path)
        if not keys:
            raise ReferenceSetError(f"{path} is not an .npz archive of arrays (np.savez)")
        if is_stats_file(path):
            raise ReferenceSetError(
                f"{path} holds statistics (keys {sorted(keys)}), not images: use it as {{stats: {path}}}"
            )
        key = IMAGES_KEY if IMAGES_KEY in keys else (keys[0] if len(keys) == 1 else None)
        if key is None:
            raise ReferenceSetError(
                f"{path} holds neither images (an array named {IMAGES_KEY!r}, or a single array) nor statistics "
                f"('mu' and 'sigma'); got arrays {sorted(keys)}"
            )
        self.path, self.key = path, key
        self.name = name or path.stem
        with self._open() as f:
            self._shape, fortran, dtype, self._offset = _header(f, path, key)
        if dtype != np.uint8 or fortran:
            order = " in Fortran order" if fortran else ""
            raise ReferenceSetError(f"{path}: array {key!r} must be uint8 images in C order; got {dtype}{order}")
        try:  # the layout, checked before any read
            as_nchw(np.zeros((0, *self._shape[1:]), np.uint8), self.name)
        except ReferenceSetError:
            raise ReferenceSetError(
                f"{path}: array {key!r} has shape {self._shape}; expected uint8 images (N, H, W, 3), (N, 3, H, W) "
                "or (N, H, W)"
            ) from None
        self.n = self._shape[0] if samples is None else min(samples, self._shape[0])
        self._row = int(np.prod(self._shape[1:], dtype=np.int64))
        self._fingerprint: str | None = None

    @contextlib.contextmanager
    def _open(self) -> Iterator[IO[bytes]]:
        with zipfile.ZipFile(self.path) as zf, zf.open(f"{self.key}.npy") as f:
            yield f

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            h = hashlib.sha256(f"{self.key}{self._shape}:{self.n}\0".encode())
            with self._open() as f:
                f.read(self._offset)
                for chunk in iter(lambda: f.read(1 << 22), b""):
                    h.update(chunk)
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def __len__(self) -> int:
        return self.n

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "source": "npz", "array": self.key, "shape": list(self._shape)}

    def iter_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        with self._open() as f:
            f.read(self._offset)
            for start in range(0, self.n, batch_size):
                k = min(batch_size, self.n - start)
                data = f.read(k * self._row)
                if len(data) != k * self._row:
                    raise ReferenceSetError(f"{self.path}: array {self.key!r} is truncated at image {start}")
                chunk = np.frombuffer(data, np.uint8).reshape(k, *self._shape[1:])
                yield torch.from_numpy(as_nchw(chunk, self.name).copy())


def _header(f: IO[bytes], path: Path, key: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """(shape, fortran order, dtype, bytes before the data) of the ``.npy`` member ``f``."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        read = {(1, 0): fmt.read_array_header_1_0, (2, 0): fmt.read_array_header_2_0}.get(version)
        if read is None:
            raise ValueError(f"unsupported .npy version {version}")
        shape, fortran, dtype = read(f)
    except ValueError as err:
        raise ReferenceSetError(f"{path}: array {key!r} is not a readable .npy ({err})") from None
    return tuple(shape), bool(fortran), np.dtype(dtype), f.tell()
