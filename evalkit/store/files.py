"""Files that survive a crash: atomic writes, checksums, sealed JSON records, safe path components.

Every file is written to a temporary ``.evalkit-<name>.<random>.tmp`` in its folder, fsynced and renamed
over the target, so a reader sees the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from evalkit.errors import StoreError
from evalkit.hashing import sha256_bytes, sha256_file

TMP_PREFIX = ".evalkit-"  # only files named .evalkit-*.tmp are ever removed as a killed writer's leftovers


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give; mkstemp's 0600 would hide results from teammates


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``. An I/O failure (disk full,
    permissions, a file where a folder goes) is a :class:`StoreError` naming the path; the old file stays."""
    path = Path(path)
    try:
        _write_replace(path, data)
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e.strerror or e}; nothing already written was lost") from e
    _fsync_dir(path.parent)


def _write_replace(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def load_npz_checked(path: Path, expected_sha256: str | None) -> dict[str, np.ndarray] | None:
    """Arrays from ``path`` if it exists and matches its checksum, else None (caller recomputes)."""
    path = Path(path)
    if not path.is_file():
        return None
    data = path.read_bytes()
    if expected_sha256 is not None and sha256_bytes(data) != expected_sha256:
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile):
        return None


_SAFE_ID = re.compile(r"[^A-Za-z0-9._=-]+")
_MAX_COMPONENT = 120


def safe_component(text: str) -> str:
    """A path component that cannot escape its folder ('..', '/', odd characters).

    Text that is already safe is kept as is; anything that had to be changed (or shortened) gets a
    short hash of the original appended, so two different names never share one folder.
    """
    text = str(text)
    out = _SAFE_ID.sub("-", text).strip(".-") or "x"
    if out == text and len(out) <= _MAX_COMPONENT:
        return out
    return f"{out[: _MAX_COMPONENT - 13]}-{sha256_bytes(text.encode('utf-8', 'surrogatepass'))[:12]}"


RECORD_SHA_KEY = "record_sha256"


def _record_digest(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != RECORD_SHA_KEY}
    return sha256_bytes(json.dumps(body, sort_keys=True, allow_nan=True).encode())


def seal_record(record: dict[str, Any]) -> dict[str, Any]:
    """``record`` as JSON will read it back, with its own checksum under ``record_sha256``."""
    plain = json.loads(json.dumps({k: v for k, v in record.items() if k != RECORD_SHA_KEY}, default=_json_default))
    return {**plain, RECORD_SHA_KEY: _record_digest(plain)}


def record_intact(record: dict[str, Any]) -> bool | None:
    """True/False: the record matches/does not match its checksum; None: it carries none (older runs)."""
    if RECORD_SHA_KEY not in record:
        return None
    return record[RECORD_SHA_KEY] == _record_digest(record)


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n").encode()


def file_matches(path: Path, expected_sha256: Any) -> bool:
    return isinstance(expected_sha256, str) and path.is_file() and sha256_file(path) == expected_sha256


def read_record(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(record, dict) or record_intact(record) is False:
        return None
    return record
