"""The weights registry: every standard network file evalkit's extractors load, where it comes from,
how to recognise it, and where to look for it.

Lookup order (first hit wins): an explicit path (suite / CLI option) → ``$EVALKIT_WEIGHTS_DIR/<filename>``
→ each library's own cache (torch hub checkpoints, clean-fid's folder, open_clip's cache). A file found
implicitly must match the registered sha256 (else :class:`WeightsMismatchError`); an explicit path is
the user's choice and may hold other weights: it is accepted and its ``weights_id`` becomes
``"custom:<sha256>"`` so results say they are not comparable with published numbers. Random networks
(tests, smoke runs) use ``"random:<seed>"``.

A file found implicitly must also be trustworthy to load: not writable by everyone and owned by the
current user or root (:class:`WeightsUntrustedError` otherwise). Some search folders are shared
(clean-fid's is ``/tmp``) and some entries have no published hash to check, so without this anyone on
the machine could plant a network there.

Where a full sha256 is not published, ``sha256`` is None and the torch-hub file-name prefix
(``sha256_prefix``, the first 8 hex digits torch hub names files with) is checked instead. An entry with
``other_is_custom`` (clean-fid's TorchScript Inception, which evalkit accepted whatever its hash before the hash
was pinned) loads a file of another hash found implicitly too, but as custom weights (``custom:<sha256>``), never
labelled standard.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from evalkit.errors import UnknownNameError, WeightsError
from evalkit.features.weights_registry import (  # noqa: F401  (the table, re-exported: one import for callers)
    CLEAN_INCEPTION_SHA256,
    ENV_WEIGHTS_DIR,
    EXTRACTOR_WEIGHTS,
    HEAD_WEIGHTS,
    LPIPS_HEADS_SHA256,
    REGISTRY,
    WeightsFile,
    _torch_hub_dir,
)
from evalkit.store import sha256_file


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    pass


class WeightsMismatchError(WeightsError):
    pass


class WeightsUntrustedError(WeightsError):
    """A weights file found implicitly that another user could have written (world-writable / foreign owner)."""


def check_trusted(path: Path) -> None:
    """Raise :class:`WeightsUntrustedError` unless ``path`` is owned by us (or root) and not world-writable."""
    st = Path(path).stat()
    uid = os.getuid() if hasattr(os, "getuid") else None
    problems = []
    if st.st_mode & 0o002:
        problems.append("it is writable by every user")
    if uid is not None and st.st_uid not in (uid, 0):
        problems.append(f"it is owned by another user (uid {st.st_uid})")
    if problems:
        raise WeightsUntrustedError(
            f"refusing to load weights file {path} found in a search folder: {' and '.join(problems)}. "
            "Check where it came from; fix its owner/permissions or pass it explicitly as custom weights."
        )


_HASH_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) within the process (weights are ~100 MB)."""
    st = Path(path).stat()
    key = (str(Path(path).resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASH_CACHE:
        _HASH_CACHE[key] = sha256_file(Path(path))
    return _HASH_CACHE[key]


def matches(entry: WeightsFile, digest: str) -> bool:
    if entry.sha256 is not None:
        return digest == entry.sha256
    if entry.sha256_prefix is not None:
        return digest.startswith(entry.sha256_prefix)
    return True  # nothing published to compare with


@dataclass(frozen=True)
class ResolvedWeights:
    entry: WeightsFile
    path: Path
    sha256: str
    standard: bool  # matches the registered file

    @property
    def weights_id(self) -> str:
        return self.sha256 if self.standard else f"custom:{self.sha256}"


def get_entry(name: str) -> WeightsFile:
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownNameError(f"unknown weights {name!r}; registered: {', '.join(sorted(REGISTRY))}") from None


def resolve_weights(name: str, explicit: str | os.PathLike | None = None) -> ResolvedWeights:
    """Find and verify the file of registry entry ``name`` (see the module docstring for the order)."""
    entry = get_entry(name)
    if explicit is not None:
        path = Path(os.path.expanduser(str(explicit)))
        if not path.is_file():
            raise WeightsNotFoundError(f"weights file for {entry.name} not found at the given path {path}")
        digest = file_sha256(path)
        return ResolvedWeights(entry, path, digest, standard=matches(entry, digest))
    searched = entry.search_paths()
    for path in searched:
        if path.is_file():
            check_trusted(path)
            digest = file_sha256(path)
            if not matches(entry, digest):
                if entry.other_is_custom:
                    return ResolvedWeights(entry, path, digest, standard=False)  # loaded, labelled custom:<sha256>
                expected = entry.sha256 or f"{entry.sha256_prefix}…"
                raise WeightsMismatchError(
                    f"weights file {path} for {entry.name} has sha256 {digest}, expected {expected}. "
                    f"Delete it and run `evalkit weights download`, or pass it explicitly as custom weights."
                )
            return ResolvedWeights(entry, path, digest, standard=True)
    raise WeightsNotFoundError(missing_message(entry, searched))


def check_extractor_weights(
    extractor: str, weights: str | os.PathLike | None = None, heads: tuple[str, ...] = ()
) -> list[str]:
    """Check only, before a run: the problem (missing, mismatched, untrusted) with the weights file that
    extractor ``extractor`` will load, found as :func:`resolve_weights` finds it, without building a network.
    ``weights``: the custom file (or folder) a suite gives it (``extractor: {name, weights}``), which must exist.
    ``heads``: the optional outputs asked of it, whose files (:data:`HEAD_WEIGHTS`) are checked the same way.
    [] when the files are there and match, or the extractor has no registered file (mnist-net, plugins)."""
    entry = EXTRACTOR_WEIGHTS.get(extractor)
    if weights is not None and not os.path.exists(os.path.expanduser(str(weights))):
        return [f"extractor.weights: custom weights for {extractor} not found at {weights}"]
    problems = []
    for name, explicit in [(entry, weights)] + [(HEAD_WEIGHTS.get((extractor, h)), None) for h in heads]:
        if name is None:
            continue
        try:
            resolve_weights(name, explicit)
        except (WeightsError, OSError) as e:
            problems.append(str(e))
    return problems


def missing_message(entry: WeightsFile, searched: list[Path]) -> str:
    where = "\n".join(f"  - {p}" for p in searched) or "  (no location: set EVALKIT_WEIGHTS_DIR)"
    env_note = "" if os.environ.get(ENV_WEIGHTS_DIR) else f"\n  (${ENV_WEIGHTS_DIR} is not set)"
    digest = entry.sha256 or (f"{entry.sha256_prefix}… (prefix)" if entry.sha256_prefix else "not published")
    return (
        f"weights file {entry.filename!r} for {entry.used_by} not found.\n"
        f"  sha256: {digest}\n  source: {entry.url}\n"
        f"searched:\n{where}{env_note}\n"
        f"Put the file in ${ENV_WEIGHTS_DIR} (or run `evalkit weights download` where online), "
        f"or pass an explicit path."
    )


def weights_comparable(weights_id: str) -> bool:
    """True when a result's weights are a standard file (a bare sha256), not ``custom:``/``random:``/...

    Resolution only hands out a bare sha256 for files that match the registry, so this is a string test.
    """
    return len(weights_id or "") == 64 and all(c in "0123456789abcdef" for c in weights_id)


def status(name: str) -> dict[str, str]:
    """One row of ``evalkit weights``: found / missing / mismatch (custom: another file, loaded as custom weights),
    the path and where the file goes."""
    entry = get_entry(name)
    searched = entry.search_paths()
    target = searched[0] if searched else None
    for path in searched:
        if path.is_file():
            digest = file_sha256(path)
            state = "found" if matches(entry, digest) else ("custom" if entry.other_is_custom else "mismatch")
            return {"name": name, "status": state, "path": str(path), "sha256": digest, "goes_to": str(target)}
    return {"name": name, "status": "missing", "path": "", "sha256": entry.sha256 or "", "goes_to": str(target)}
