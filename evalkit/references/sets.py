"""Reference sets (the real images metrics compare against) and their cached features.

A reference spec is a small dict, as written in a suite:

- ``{"dataset": "mnist-heldout" | "mnist-train"}``  built-in data (``evalkit.zoo.data``)
- ``{"path": "folder/or/file.zip"}``               images found recursively (png/jpg/jpeg/webp), sorted
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

import io
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from evalkit.errors import InputError
from evalkit.references.names import BUILTIN_DATASETS as BUILTIN_DATASETS  # re-exported: its home is torch-free
from evalkit.store import sha256_bytes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
# Bump when the cached layout or the meaning of a key changes. 2: entries record the files skipped as
# undecodable (name and reason), and "n" is the number of feature rows.
CACHE_FORMAT = 2
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
        images = np.asarray(images)
        if images.dtype != np.uint8:
            raise ReferenceSetError(f"reference {name!r}: images must be uint8, got {images.dtype}")
        if images.ndim == 3:  # (N, H, W) gray → (N, 3, H, W)
            images = np.repeat(images[:, None], 3, axis=1)
        elif images.ndim == 4 and images.shape[-1] in (1, 3) and images.shape[1] not in (1, 3):
            images = np.moveaxis(images, -1, 1)
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ReferenceSetError(
                f"reference {name!r}: expected (N, H, W) or (N, 3, H, W) images, got {images.shape}"
            )
        if images.shape[1] == 1:
            images = np.repeat(images, 3, axis=1)
        self.name = name
        self.images = np.ascontiguousarray(images)
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


class _FileSource:
    """Where image bytes come from: a folder or a zip archive. Names are sorted, relative, '/'-separated."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ignored: list[str] = []
        self.is_zip = path.is_file() and zipfile.is_zipfile(path)
        if path.is_file() and not self.is_zip:
            raise ReferenceSetError(
                f"reference path {path} is a file but not a zip archive (expected a folder or .zip)"
            )

    def names(self) -> list[str]:
        """Image files (by extension), sorted; other visible files are counted in ``self.ignored``."""
        if self.is_zip:
            with zipfile.ZipFile(self.path) as zf:
                found = [i.filename for i in zf.infolist() if not i.is_dir()]
        else:
            found = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
        visible = [n for n in found if not n.startswith("__MACOSX/") and not Path(n).name.startswith(".")]
        images = sorted(n for n in visible if n.lower().endswith(IMAGE_EXTENSIONS))
        self.ignored = sorted(set(visible) - set(images))
        return images

    def read_all(self, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        if self.is_zip:
            with zipfile.ZipFile(self.path) as zf:
                for n in names:
                    yield n, zf.read(n)
        else:
            for n in names:
                yield n, (self.path / n).read_bytes()


def _decode_rgb(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


class FileReference(ReferenceSet):
    """Images in a folder (recursive) or a zip. The first access reads every file once to hash it and
    check its header (no decoding), so ``len()`` counts readable images and the fingerprint covers
    names and bytes."""

    def __init__(
        self, path: Path, *, samples: int | None = None, strict: bool = False, name: str | None = None
    ) -> None:
        if not path.exists():
            raise ReferenceSetError(f"reference path does not exist: {path}")
        self.source = _FileSource(path)
        self.name = name or path.name
        self.samples = samples
        self.strict = strict
        self._valid: list[str] | None = None
        self._fingerprint: str | None = None
        #: every skipped file (header check or decoding), in the order found
        self.skipped: list[str] = []
        #: why: name -> reason, for files that failed the header check / that passed it but do not decode
        self.unreadable: dict[str, str] = {}
        self._undecodable: dict[str, str] = {}

    def _scan(self) -> None:
        import hashlib

        names = self.source.names()
        if not names:
            raise ReferenceSetError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {self.source.path}")
        h = hashlib.sha256()
        valid: list[str] = []
        for n, data in self.source.read_all(names):
            if self.samples is not None and len(valid) >= self.samples:
                break
            try:
                _verify(data)
            except Exception as err:
                if self.strict:
                    raise ReferenceSetError(
                        f"corrupt or unreadable image {n!r} in {self.source.path}: {_reason(err)}"
                    ) from err
                self.skipped.append(n)
                self.unreadable[n] = _reason(err)
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
            warnings.warn(
                f"reference {self.source.path}: {'; '.join(parts)} ({_STRICT_HINT} to make unreadable images an error)",
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

    @property
    def undecodable(self) -> dict[str, str]:
        return dict(self._undecodable)

    def iter_batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """Decoded batches. A file that passed the header check but cannot be decoded (e.g. a truncated
        JPEG, a PNG with a corrupt IDAT) is an error with ``strict: true``, else skipped, counted in
        ``skipped`` / ``undecodable`` and warned about (``len()`` drops it from then on)."""
        batch: list[np.ndarray] = []
        broken: dict[str, str] = {}
        for n, data in self.source.read_all(self.files):
            try:
                img = _decode_rgb(data)
            except Exception as err:
                if self.strict:
                    raise ReferenceSetError(_undecodable_error(self.source.path, {n: _reason(err)})) from err
                broken[n] = _reason(err)
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
            f"reference {self.source.path}: skipped {len(broken)} image file(s) that cannot be "
            f"decoded, e.g. {first!r} ({broken[first]}) ({_STRICT_HINT} to make this an error)",
            stacklevel=stacklevel,
        )


def _reason(err: BaseException) -> str:
    """One line: the exception's message (or its type when it has none)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _undecodable_error(path: Path, broken: dict[str, str], *, cached: bool = False) -> str:
    """One line naming the files that passed the header check but cannot be decoded (``cached``: as
    recorded by the reference feature cache, which decodes nothing on a hit)."""
    where = " (recorded in the reference feature cache when the features were computed)" if cached else ""
    if len(broken) == 1:
        ((n, reason),) = broken.items()
        return (
            f"image {n!r} in {path} passed the header check but cannot be decoded ({reason}){where}; "
            "remove or replace it"
        )
    shown = list(broken.items())[:10]
    names = ", ".join(f"{n!r} ({reason})" for n, reason in shown)
    more = f" and {len(broken) - len(shown)} more" if len(broken) > len(shown) else ""
    return (
        f"{len(broken)} images in {path} passed the header check but cannot be decoded: {names}{more}"
        f"{where}; remove or replace them"
    )


def _verify(data: bytes) -> None:
    """Header and chunk check only (PIL ``verify``: cheap, no pixel decoding)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.verify()


def _stack(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
