"""Reference sets (the real images metrics compare against) and their cached features.

A reference spec is a small dict, as written in a suite:

- ``{"dataset": "mnist-heldout" | "mnist-train"}``  built-in data (``evalkit.zoo.data``)
- ``{"path": "folder | file.zip | shard.tar"}``     image files found recursively, sorted, decoded by the rules of
                                                   :mod:`evalkit.references.sources` (EXIF orientation, RGB, 16-bit)
- ``{"path": "images.npz"}``                       a uint8 image array, streamed (:mod:`evalkit.references.arrays`)
- ``{"stats": "file.npz"}``                        precomputed mean/covariance (serves FD only)

each with optional ``"samples": N`` (the first N images) and, for paths, ``"strict": true`` (a corrupt
image is an error instead of a counted warning). Images stream in batches, never all in memory.

:func:`evalkit.references.cache.reference_features` makes ONE pass over the images feeding every extractor, and
caches the result on disk keyed by (fingerprint, extractor, weights_id, mode, resolution); a hit skips the networks.
An image whose header checks but whose pixels do not decode is found only by decoding it; cache entries record such
files (name and reason) and every hit replays them: the same warning, ``len()`` equal to the feature rows, and with
``strict`` an error naming them.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.errors import InputError
from evalkit.references.names import BUILTIN_DATASETS as BUILTIN_DATASETS  # re-exported: its home is torch-free
from evalkit.references.sources import DECODING, IMAGE_EXTENSIONS, FileSource, SourceError, decode_rgb, reason, verify
from evalkit.store import sha256_bytes

# Bump when the cached layout or the meaning of a key changes. 2: entries record the files skipped as
# undecodable (name and reason), and "n" is the number of feature rows. 3: decoding applies EXIF orientation and
# maps 16-bit images by their high byte (sources.DECODING), and .bmp/.tif/.tiff/.ppm/.pgm files are images.
CACHE_FORMAT = 3
_SPEC_KEYS = {"dataset", "path", "stats", "samples", "strict", "name"}
_STRICT_HINT = "set 'strict: true' in the reference spec, or pass --strict to evalkit stats,"


class ReferenceSetError(InputError):
    """A reference spec that cannot be opened: unknown dataset, missing path, no images, bad stats file."""


class ReferenceSet:
    """Base class: ``name``, ``fingerprint``, ``len()``, ``labels`` and streamed uint8 batches."""

    name: str
    labels: np.ndarray | None = None
    #: Gaussian statistics instead of images ({"features.mu": ..., "features.sigma": ...}); None for images
    stats: dict[str, np.ndarray] | None = None

    @property
    def fingerprint(self) -> str:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def iter_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """uint8 (B, 3, H, W) batches in a fixed order; a size change starts a new batch."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint, "n": len(self), "kind": type(self).__name__}

    def images_at(self, indices: list[int]) -> list[np.ndarray]:
        """uint8 (3, H, W) images at ``indices`` (positions in the stream's order), for display. Decodes the stream
        up to the last one asked for; subclasses that can seek do."""
        want, found = set(indices), {}
        position = 0
        for batch in self.iter_batches(64):
            for image in batch.numpy():
                if position in want:
                    found[position] = image
                position += 1
            if len(found) == len(want):
                break
        return [found[i] for i in indices]

    @property
    def undecodable(self) -> dict[str, str]:
        """Files that passed the header check but whose pixels could not be decoded: name -> reason.
        Only file references have any; the feature cache records them (see :meth:`restore_undecodable`)."""
        return {}

    def restore_undecodable(self, entries: dict[str, str]) -> None:
        """Apply undecodable files recorded by the feature cache (a cache hit decodes nothing)."""
        if entries:
            raise ReferenceSetError(
                f"reference {self.name!r} has no image files, but its cached features record "
                f"undecodable files {sorted(entries)}"
            )


class ArrayReference(ReferenceSet):
    """Images already in memory (the built-in datasets are 1000s of 32×32 digits)."""

    def __init__(self, name: str, images: np.ndarray, labels: np.ndarray | None = None) -> None:
        self.name = name
        self.images = as_nchw(images, name)
        self.labels = None if labels is None else np.asarray(labels)
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            parts = [self.images.tobytes(), str(self.images.shape).encode()]
            if self.labels is not None:
                parts.append(np.ascontiguousarray(self.labels).tobytes())
            self._fingerprint = sha256_bytes(b"\0".join(parts))
        return self._fingerprint

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def iter_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        for start in range(0, len(self), batch_size):
            yield torch.from_numpy(self.images[start : start + batch_size].copy())

    def images_at(self, indices: list[int]) -> list[np.ndarray]:
        return [self.images[i] for i in indices]


def as_nchw(images: np.ndarray, name: str) -> np.ndarray:
    """uint8 ``(N, 3, H, W)`` from ``(N, H, W)`` gray, ``(N, H, W, 1|3)`` or ``(N, 1|3, H, W)`` (channels first when
    ``shape[1]`` is 1 or 3); anything else is a :class:`ReferenceSetError` naming ``name`` and the shape."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ReferenceSetError(f"reference {name!r}: images must be uint8, got {images.dtype}")
    if images.ndim == 3:  # (N, H, W) gray → (N, 3, H, W)
        images = np.repeat(images[:, None], 3, axis=1)
    elif images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
        images = np.moveaxis(images, -1, 1)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ReferenceSetError(
            f"reference {name!r}: expected (N, H, W), (N, H, W, 3) or (N, 3, H, W) images, got {images.shape}"
        )
    if images.shape[1] == 1:
        images = np.repeat(images, 3, axis=1)
    return np.ascontiguousarray(images)


class FileReference(ReferenceSet):
    """Images in a folder (recursive), a zip or a tar (:class:`~evalkit.references.sources.FileSource`). The first
    access reads every file once to hash it and check its header (no decoding), so ``len()`` counts readable
    images and the fingerprint covers names and bytes. Pixels follow :data:`~evalkit.references.sources.DECODING`."""

    def __init__(
        self,
        path: Path,
        *,
        samples: int | None = None,
        strict: bool = False,
        name: str | None = None,
        role: str = "reference",
    ) -> None:
        self.role = role  # what messages call these images ("reference", "generated images")
        if not path.exists():
            raise ReferenceSetError(f"{role} path does not exist: {path}")
        try:
            self.source = FileSource(path)
        except SourceError as err:
            raise ReferenceSetError(f"{role} path {err}") from None
        self.name = name or path.name
        self.samples = samples
        self.strict = strict
        self._valid: list[str] | None = None
        self._fingerprint: str | None = None
        #: every image file found (by extension), sorted, before any was skipped
        self.found: list[str] = []
        #: every skipped file (header check or decoding), in the order found
        self.skipped: list[str] = []
        #: why: name -> reason, for files that failed the header check / that passed it but do not decode
        self.unreadable: dict[str, str] = {}
        self._undecodable: dict[str, str] = {}

    def _scan(self) -> None:
        import hashlib

        self.found = names = self.source.names()
        if not names:
            raise ReferenceSetError(_no_images(self.source))
        h = hashlib.sha256()
        valid: list[str] = []
        for n, data in self.source.read_all(names):
            if self.samples is not None and len(valid) >= self.samples:
                break
            try:
                verify(data)
            except Exception as err:
                if self.strict:
                    raise ReferenceSetError(
                        f"corrupt or unreadable image {n!r} in {self.source.path}: {reason(err)}"
                    ) from err
                self.skipped.append(n)
                self.unreadable[n] = reason(err)
                continue
            valid.append(n)
            h.update(n.encode() + b"\0" + sha256_bytes(data).encode())
        ignored = self.source.ignored
        if self.skipped or ignored:
            parts = []
            if self.skipped:
                parts.append(f"skipped {len(self.skipped)} unreadable image file(s), e.g. {self.skipped[0]!r}")
            if ignored:
                parts.append(f"ignored {len(ignored)} non-image file(s), e.g. {ignored[0]!r}")
            listed = f" (unreadable: {_listing(self.unreadable)})" if self.unreadable else ""
            warnings.warn(
                f"{self.role} {self.source.path}: {'; '.join(parts)}{listed} "
                f"({_STRICT_HINT} to make unreadable images an error)",
                stacklevel=3,
            )
        if not valid:
            raise ReferenceSetError(f"no readable images under {self.source.path} ({len(self.skipped)} corrupt)")
        self._valid = valid
        self._fingerprint = h.hexdigest()

    @property
    def files(self) -> list[str]:
        if self._valid is None:
            self._scan()
        return list(self._valid or [])

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._scan()
        return self._fingerprint or ""

    def __len__(self) -> int:
        return len(self.files)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "source": self.source.kind, "decoding": DECODING}

    @property
    def undecodable(self) -> dict[str, str]:
        return dict(self._undecodable)

    def images_at(self, indices: list[int]) -> list[np.ndarray]:
        files = self.files
        data = dict(self.source.read_all([files[i] for i in indices]))
        return [np.ascontiguousarray(decode_rgb(data[files[i]]).transpose(2, 0, 1)) for i in indices]

    def prompts(self) -> dict[str, str]:
        """``{file: prompt}`` from ``.txt`` files beside the images (``key.png`` + ``key.txt``, as in a webdataset)."""
        return self.source.prompts(self.files)

    def iter_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Decoded batches. A file that passed the header check but cannot be decoded (e.g. a truncated
        JPEG, a PNG with a corrupt IDAT) is an error with ``strict: true``, else skipped, counted in
        ``skipped`` / ``undecodable`` and warned about (``len()`` drops it from then on)."""
        batch: list[np.ndarray] = []
        broken: dict[str, str] = {}
        for n, data in self.source.read_all(self.files):
            try:
                img = decode_rgb(data)
            except Exception as err:
                if self.strict:
                    raise ReferenceSetError(_undecodable_error(self.source.path, {n: reason(err)})) from err
                broken[n] = reason(err)
                continue
            if batch and img.shape != batch[0].shape:
                yield _stack(batch)
                batch = []
            batch.append(img)
            if len(batch) == batch_size:
                yield _stack(batch)
                batch = []
        if batch:
            yield _stack(batch)
        if broken:
            self._drop_undecodable(broken, stacklevel=3)

    def restore_undecodable(self, entries: dict[str, str]) -> None:
        """Apply the undecodable files a feature-cache entry recorded when it was computed, exactly as the
        decoding pass did: an error naming them with ``strict: true``, else the same warning, and
        ``len()`` / ``files`` drop them (so the count equals the cached feature rows)."""
        if not entries:
            return
        if self.strict:
            raise ReferenceSetError(_undecodable_error(self.source.path, entries, cached=True))
        self._drop_undecodable(dict(entries), stacklevel=4)

    def _drop_undecodable(self, broken: dict[str, str], *, stacklevel: int) -> None:
        self._undecodable.update(broken)
        self.skipped.extend(b for b in broken if b not in self.skipped)
        self._valid = [n for n in self.files if n not in broken]
        first = next(iter(broken))
        warnings.warn(
            f"{self.role} {self.source.path}: skipped {len(broken)} image file(s) that cannot be "
            f"decoded, e.g. {first!r} ({broken[first]}) (all: {_listing(broken)}) "
            f"({_STRICT_HINT} to make this an error)",
            stacklevel=stacklevel,
        )


def _no_images(source: FileSource) -> str:
    """Why a source holds no image: it is empty, or its files are of no known image type (naming some)."""
    others = source.ignored
    if not others:
        return f"{source.path} holds no files (an empty {source.kind}); expected images ({', '.join(IMAGE_EXTENSIONS)})"
    return (
        f"no images of a known type ({', '.join(IMAGE_EXTENSIONS)}) under {source.path}: "
        f"{len(others)} other file(s), e.g. {', '.join(repr(n) for n in others[:3])}"
    )


def _listing(files: dict[str, str], limit: int = 10) -> str:
    """``'a.png' (why), 'b.jpg' (why) and 3 more``."""
    shown = ", ".join(f"{n!r} ({why})" for n, why in list(files.items())[:limit])
    return shown + (f" and {len(files) - limit} more" if len(files) > limit else "")


def _undecodable_error(path: Path, broken: dict[str, str], *, cached: bool = False) -> str:
    """One line naming the files that passed the header check but cannot be decoded (``cached``: as
    recorded by the reference feature cache, which decodes nothing on a hit)."""
    where = " (recorded in the reference feature cache when the features were computed)" if cached else ""
    if len(broken) == 1:
        ((n, why),) = broken.items()
        return (
            f"image {n!r} in {path} passed the header check but cannot be decoded ({why}){where}; remove or replace it"
        )
    return (
        f"{len(broken)} images in {path} passed the header check but cannot be decoded: {_listing(broken)}"
        f"{where}; remove or replace them"
    )


def _stack(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
