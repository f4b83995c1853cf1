"""Where image files come from — a folder (recursive), a zip, or a tar (a webdataset shard) — and how one is decoded.

The decoding rules are :mod:`evalkit.imagefiles` (re-exported here).

Image files are those ending in :data:`IMAGE_EXTENSIONS` (any case; clean-fid's list less ``.npy``); hidden files
and ``__MACOSX/`` are skipped. A ``.txt`` with an image's name and another suffix (``key.png`` + ``key.txt``, the
webdataset convention) is that image's prompt.
"""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath

from evalkit.imagefiles import DECODING, IMAGE_EXTENSIONS, decode_rgb, verify

__all__ = ["DECODING", "IMAGE_EXTENSIONS", "decode_rgb", "verify"]  # their home is evalkit.imagefiles

PROMPT_SUFFIX = ".txt"


class SourceError(ValueError):
    """A path that is no folder, zip or tar archive (the reference set turns it into its own error)."""


class FileSource:
    """Image files in a folder (recursive), a zip or a tar archive (any compression tarfile reads). Names are
    relative, '/'-separated and sorted; archives are read without extracting anything to disk."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ignored: list[str] = []
        self.kind = "folder"
        if path.is_file():
            if zipfile.is_zipfile(path):
                self.kind = "zip"
            elif tarfile.is_tarfile(path):
                self.kind = "tar"
            else:
                raise SourceError(f"{path} is a file but not a zip or tar archive (expected a folder, .zip or .tar)")
        self._all: list[str] | None = None

    def _listing(self) -> list[str]:
        if self._all is None:
            if self.kind == "zip":
                with zipfile.ZipFile(self.path) as zf:
                    found = [i.filename for i in zf.infolist() if not i.is_dir()]
            elif self.kind == "tar":
                with tarfile.open(self.path, "r:*") as tf:
                    found = [m.name for m in tf.getmembers() if m.isfile()]
            else:
                found = [p.relative_to(self.path).as_posix() for p in self.path.rglob("*") if p.is_file()]
            self._all = [
                n for n in found if not n.startswith("__MACOSX/") and not any(p.startswith(".") for p in _parts(n))
            ]
        return self._all

    def names(self) -> list[str]:
        """Image files (by extension), sorted; other visible files (prompts aside) are listed in ``self.ignored``."""
        visible = self._listing()
        images = sorted({n for n in visible if n.lower().endswith(IMAGE_EXTENSIONS)})
        prompts = {prompt_name(n) for n in images}
        self.ignored = sorted(set(visible) - set(images) - prompts)
        return images

    def read_all(self, names: Sequence[str]) -> Iterator[tuple[str, bytes]]:
        if self.kind == "zip":
            with zipfile.ZipFile(self.path) as zf:
                for n in names:
                    yield n, zf.read(n)
        elif self.kind == "tar":
            with tarfile.open(self.path, "r:*") as tf:
                members = {m.name: m for m in tf.getmembers() if m.isfile()}
                for n in names:
                    f = tf.extractfile(members[n])
                    yield n, f.read() if f is not None else b""
        else:
            for n in names:
                yield n, (self.path / n).read_bytes()

    def prompts(self, images: Sequence[str]) -> dict[str, str]:
        """``{image: text}`` for the images that have a non-empty ``.txt`` of the same name (other suffix)."""
        present = set(self._listing())
        wanted = {prompt_name(n): n for n in images if prompt_name(n) in present}
        out = {}
        for txt, data in self.read_all(sorted(wanted)):
            text = data.decode("utf-8-sig", errors="replace").strip()
            if text:
                out[wanted[txt]] = text
        return out


def prompt_name(image: str) -> str:
    """The prompt file of an image: its name with the last suffix replaced by ``.txt`` (``a/k.png`` → ``a/k.txt``)."""
    stem, dot, _ = image.rpartition(".")
    return (stem if dot and "/" not in image[len(stem) :] else image) + PROMPT_SUFFIX


def _parts(name: str) -> tuple[str, ...]:
    return PurePosixPath(name).parts


def reason(err: BaseException) -> str:
    """One line: the exception's message (or its type when it has none)."""
    text = " ".join(str(err).split())
    return text or type(err).__name__
