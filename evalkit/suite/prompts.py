"""Prompt sets: a list in the suite, a prompt file, or a set shipped with evalkit.

Files: ``.txt`` (one per line), ``.jsonl`` (objects with a ``prompt`` or ``caption`` key, as COCO
captions are usually shipped), ``.csv`` (a ``prompt`` or ``caption`` column), a COCO ``captions_*.json``
annotation file, or ``builtin:evalkit-200``. A malformed file is a :class:`PromptFileError` naming the
file and the line or field, so the CLI prints it and exits 2.
"""

from __future__ import annotations

import csv
import json
from importlib import resources
from pathlib import Path
from typing import Any

from evalkit.errors import ConfigError

BUILTIN_PREFIX = "builtin:"
PROMPT_SUFFIXES = (".txt", ".jsonl", ".csv", ".json")
PROMPT_KEYS = ("prompt", "caption")


class PromptFileError(ConfigError):
    """A prompt file that cannot be read; ``str()`` is ``<file>: <line or field>: <what was expected>``."""

    def __init__(self, file: str | Path, field: str, message: str):
        self.file, self.field, self.message = str(file), field, message
        super().__init__(f"{self.file}: {field}: {message}")


def builtin_prompt_sets() -> list[str]:
    """Names usable as ``prompts: builtin:<name>`` (files in ``evalkit/data/prompts``)."""
    folder = resources.files("evalkit") / "data" / "prompts"
    if not folder.is_dir():
        return []
    return sorted(f.name.rsplit(".", 1)[0] for f in folder.iterdir() if f.name.endswith(PROMPT_SUFFIXES))


def builtin_prompt_path(name: str) -> Path:
    folder = resources.files("evalkit") / "data" / "prompts"
    for suffix in PROMPT_SUFFIXES:
        f = folder / f"{name}{suffix}"
        if f.is_file():
            return Path(str(f))
    raise PromptFileError(
        f"{BUILTIN_PREFIX}{name}",
        "conditions.prompts",
        f"no built-in prompt set {name!r}; expected one of: {', '.join(builtin_prompt_sets())}",
    )


def _pick(obj: Any, path: Path, where: str) -> str:
    if not isinstance(obj, dict):
        raise PromptFileError(
            path, where, f"expected a JSON object with a 'prompt' or 'caption' key; got {type(obj).__name__}"
        )
    key = next((k for k in PROMPT_KEYS if k in obj), None)
    if key is None:
        raise PromptFileError(path, where, f"expected a 'prompt' or 'caption' key; got keys {sorted(obj)[:8]}")
    text = obj[key]
    if not isinstance(text, str) or not text.strip():
        raise PromptFileError(path, f"{where}, field '{key}'", f"expected a non-empty string; got {text!r:.60}")
    return text.strip()


def _read_jsonl(path: Path, text: str) -> list[str]:
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise PromptFileError(path, f"line {n}", f"not valid JSON ({e.msg} at column {e.colno})") from None
        out.append(_pick(obj, path, f"line {n}"))
    return out


def _read_json(path: Path, text: str) -> list[str]:
    """A JSON list of objects, or a COCO annotation file (``{"annotations": [{"caption": ...}]}``)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise PromptFileError(path, f"line {e.lineno}", f"not valid JSON ({e.msg})") from None
    items = doc.get("annotations") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise PromptFileError(path, "<top level>", "expected a list of objects or a COCO file with 'annotations'")
    return [_pick(obj, path, f"item {i}") for i, obj in enumerate(items)]


def _read_csv(path: Path, text: str) -> list[str]:
    reader = csv.DictReader(text.splitlines())
    columns = reader.fieldnames or []
    key = next((k for k in PROMPT_KEYS if k in columns), None)
    if key is None:
        raise PromptFileError(path, "header", f"expected a 'prompt' or 'caption' column; got columns {columns}")
    out = []
    for row in reader:
        value = (row.get(key) or "").strip()
        if not value:
            raise PromptFileError(path, f"line {reader.line_num}, column '{key}'", "expected a non-empty prompt")
        out.append(value)
    return out


def read_prompt_file(path: Path) -> list[str]:
    """Prompts from a .txt (one per non-empty line), .jsonl, .json (COCO captions) or .csv file."""
    path = Path(path)
    if not path.is_file():
        raise PromptFileError(path, "conditions.prompts", "prompt file does not exist")
    if path.suffix.lower() not in PROMPT_SUFFIXES:
        raise PromptFileError(path, "conditions.prompts", f"expected a {', '.join(PROMPT_SUFFIXES)} file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise PromptFileError(path, f"byte {e.start}", "not a UTF-8 text file") from None
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        prompts = _read_jsonl(path, text)
    elif suffix == ".json":
        prompts = _read_json(path, text)
    elif suffix == ".csv":
        prompts = _read_csv(path, text)
    else:
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise PromptFileError(path, "conditions.prompts", "the file holds no prompts")
    return prompts


def resolve_prompts(source: str, base_dir: Path | None = None) -> list[str]:
    """Prompts of ``builtin:<name>`` or of a file (relative to the suite's folder)."""
    if source.startswith(BUILTIN_PREFIX):
        return read_prompt_file(builtin_prompt_path(source[len(BUILTIN_PREFIX) :]))
    path = Path(source).expanduser()
    return read_prompt_file(path if path.is_absolute() or base_dir is None else base_dir / path)
