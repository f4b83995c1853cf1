"""Find and read suite files: a path, or a suite shipped with evalkit (``smoke``); YAML → :class:`Suite`.

Suites are read with :class:`SuiteLoader`, PyYAML's safe loader (no Python objects) made strict: a key given
twice in one mapping is an error (YAML would keep the last silently), and aliases (``*name``) are refused
before anything is built: a few hundred bytes of nested aliases expand to billions of values ("billion
laughs"), which validation, hashing or recording would then walk. Both errors name the line.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from evalkit.suite.spec import Suite
from evalkit.suite.validate import SuiteError, parse_suite


class SuiteLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses aliases and duplicate keys (a ``yaml.MarkedYAMLError`` naming the line)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None,
                None,
                f"alias *{event.anchor} refused: suite files may not use YAML anchors and aliases "
                "(they can expand exponentially); write the value out",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: the base class says so
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {key!r} (first at line {first.start_mark.line + 1}): "
                        "each key may appear once in a mapping",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


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
        raw = yaml.load(text, Loader=SuiteLoader)  # a safe loader: a suite can never construct Python objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        raise SuiteError(path, "yaml", f"not valid YAML at {where}: {getattr(e, 'problem', e)}") from None
    except (ValueError, TypeError, OverflowError) as e:  # e.g. a timestamp like 2020-13-45
        raise SuiteError(path, "yaml", f"not valid YAML: {e}") from None
    except RecursionError:
        raise SuiteError(path, "yaml", "not valid YAML: nested too deeply") from None
    return parse_suite(raw, file=path)
