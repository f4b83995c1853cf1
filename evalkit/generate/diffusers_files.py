"""Finding a diffusers pipeline's files without loading it: a local folder or the Hugging Face cache, offline.

Kept apart from the adapter so that planning (``--dry-run``) reads config files only: the scheduler config
(timesteps), ``model_index.json`` (the pipeline class) and the denoiser config (its guidance embedding).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def local_file(path: str, relative: str, revision: str | None = None) -> Path | None:
    """``relative`` inside a local pipeline folder, or inside the hub cache's copy of hub id ``path``."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        f = folder / relative
        return f if f.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(path, relative, revision=revision)
    except Exception:
        return None
    return Path(hit) if isinstance(hit, str) else None


def read_json(path: str, relative: str, revision: str | None = None) -> dict[str, Any] | None:
    f = local_file(path, relative, revision)
    return json.loads(f.read_text()) if f is not None else None


def config_identity(path: str, revision: str | None = None) -> dict[str, str]:
    """The hash of every JSON config of the pipeline (and the hub snapshot's commit), recorded in run.json."""
    folder = Path(path).expanduser()
    cfg_file = local_file(path, "model_index.json", revision)
    if cfg_file is None:
        return {}
    out: dict[str, str] = {}
    root = folder if folder.is_dir() else cfg_file.parent
    if not folder.is_dir():
        out["revision"] = root.name  # the hub cache's snapshot folder is the commit hash
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.json")):
        h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    out["config_sha256"] = h.hexdigest()
    return out


def dtype_kwarg() -> str:
    """diffusers renamed ``torch_dtype`` to ``dtype`` (and warns on the old name); older releases want the old."""
    try:
        from diffusers.utils.deprecation_utils import _resolve_dtype  # noqa: F401
    except ImportError:
        return "torch_dtype"
    return "dtype"
