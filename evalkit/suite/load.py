"""Find and read suite files: a path, or a suite shipped with evalkit (``smoke``); YAML → :class:`Suite`."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from evalkit.suite.spec import Suite
from evalkit.suite.validate import SuiteError, parse_suite


def resolve_suite_path(name_or_path: str | Path) -> Path:
    """A path as given, else a suite shipped with evalkit (``smoke`` → ``suites/smoke.yaml``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    stem = p.name if p.suffix in (".yaml", ".yml") else f"{p.name}.yaml"
    packaged = resources.files("evalkit") / "suites" / stem
    if packaged.is_file():
        return Path(str(packaged))
    known = ", ".join(sorted(embedded_suites())) or "none"
    raise SuiteError(name_or_path, "file", f"no such suite file; embedded suites: {known}")


def embedded_suites() -> list[str]:
    folder = resources.files("evalkit") / "suites"
    if not folder.is_dir():
        return []
    return sorted(f.name.rsplit(".", 1)[0] for f in folder.iterdir() if f.name.endswith((".yaml", ".yml")))


def load_suite(name_or_path: str | Path) -> Suite:
    path = resolve_suite_path(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SuiteError(path, "file", "not a UTF-8 text file") from None
    except OSError as e:
        raise SuiteError(path, "file", f"cannot read the suite file: {e.strerror or e}") from None
    try:
        raw = yaml.safe_load(text)  # safe_load only: a suite can never construct Python objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise SuiteError(path, "yaml", f"not valid YAML at {where}: {getattr(e, 'problem', e)}") from None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. a timestamp like 2020-13-45
        raise SuiteError(path, "yaml", f"not valid YAML: {e}") from None
    except RecursionError:
        raise SuiteError(path, "yaml", "not valid YAML: nested too deeply") from None
    return parse_suite(raw, file=path)
