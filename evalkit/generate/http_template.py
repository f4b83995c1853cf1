"""The http adapter's templates: placeholders in a request, ``${VAR}`` secrets in headers, paths into a response.

- A request template (URL, JSON body, OpenAI ``extra_body``, the ``prompt`` option) holds placeholders
  ``{prompt} {seed} {seed32} {steps} {guidance} {width} {height} {class} {index}``. A string that is exactly one
  placeholder becomes the value itself (``"{seed}"`` → the integer); inside a longer string it is text.
  Other braces are left alone, so JSON-like text in a prompt template survives.
- Header values take secrets from the environment, ``"Bearer ${MY_API_KEY}"``, read when a request is sent.
  Only the template (the suite's text) is ever recorded; :class:`Secrets` redacts the values from any message.
- A response path ``data.0.b64_json`` or ``images[0].url`` walks mappings by key and lists by index.
"""

from __future__ import annotations

import os
import re
from typing import Any
from urllib.parse import quote

PLACEHOLDERS = ("prompt", "seed", "seed32", "steps", "guidance", "width", "height", "class", "index")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
# header names whose value is a credential: a literal value would be recorded in run.json with the suite
_CREDENTIAL = re.compile(r"auth|key|token|secret|cookie|session|password|signature", re.IGNORECASE)


def placeholders_in(template: Any) -> set[str]:
    """The placeholders a (nested) template uses."""
    if isinstance(template, str):
        return set(_PLACEHOLDER.findall(template))
    if isinstance(template, dict):
        return set().union(*(placeholders_in(v) for v in template.values())) if template else set()
    if isinstance(template, list):
        return set().union(*(placeholders_in(v) for v in template)) if template else set()
    return set()


def fill(template: Any, values: dict[str, Any], *, url: bool = False) -> Any:
    """``template`` with its placeholders replaced by ``values`` (recursively through dicts and lists).
    ``url=True`` percent-encodes each substituted value (a prompt in a query string)."""
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole and not url:
            return values[whole.group(1)]
        enc = (lambda v: quote(str(v), safe="")) if url else str
        return _PLACEHOLDER.sub(lambda m: enc(values[m.group(1)]), template)
    if isinstance(template, dict):
        return {k: fill(v, values, url=url) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, values, url=url) for v in template]
    return template


def env_names(text: Any) -> list[str]:
    """The ``${VAR}`` names a string refers to, in order."""
    return _ENV.findall(text) if isinstance(text, str) else []


def has_env_reference(template: Any) -> bool:
    if isinstance(template, str):
        return bool(_ENV.search(template))
    if isinstance(template, dict):
        return any(has_env_reference(k) or has_env_reference(v) for k, v in template.items())
    if isinstance(template, list):
        return any(has_env_reference(v) for v in template)
    return False


def header_problems(headers: Any, *, check_env: bool = True) -> list[str]:
    """What is wrong with a ``headers`` option: not a mapping of strings, a credential written out literally, or an
    environment variable that is not set."""
    if headers is None:
        return []
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        return ["headers: expected a mapping of header names to strings, e.g. {Authorization: 'Bearer ${MY_API_KEY}'}"]
    problems = []
    for name, value in headers.items():
        names = env_names(value)
        if _CREDENTIAL.search(name) and not names:
            problems.append(
                f"headers.{name}: a credential must come from the environment, e.g. 'Bearer ${{MY_API_KEY}}' "
                "(a value written in the suite would be recorded in run.json)"
            )
        if check_env:
            problems += [f"headers.{name}: environment variable {v} is not set" for v in names if v not in os.environ]
    return problems


class Secrets:
    """Header templates expanded at request time, and redaction of their values from any text shown."""

    def __init__(self, headers: dict[str, str]):
        self.templates = dict(headers)

    def names(self) -> dict[str, list[str]]:
        """Header name → the environment variables its value reads (what ``info()`` records: no values)."""
        return {name: env_names(value) for name, value in self.templates.items()}

    def headers(self) -> dict[str, str]:
        """The headers to send now, ``${VAR}`` read from the environment (KeyError names a variable not set)."""
        out = {}
        for name, value in self.templates.items():
            missing = [v for v in env_names(value) if v not in os.environ]
            if missing:
                raise KeyError(f"environment variable {missing[0]} (header {name}) is not set")
            out[name] = _ENV.sub(lambda m: os.environ[m.group(1)], value)
        return out

    def redact(self, text: str) -> str:
        """``text`` with every current value of a referenced variable replaced by ``${VAR}``."""
        for names in self.names().values():
            for var in names:
                value = os.environ.get(var, "")
                if len(value) >= 4:
                    text = text.replace(value, f"${{{var}}}")
        return text


def parse_path(path: str) -> list[str | int]:
    """``data.0.b64_json`` / ``images[0].url`` → ``['data', 0, 'b64_json']`` (digits are list indices)."""
    if not path:
        return []
    if not re.fullmatch(r"[^.\[\]]+(\[\d+\]|\.[^.\[\]]+)*", path):
        raise ValueError(f"response path {path!r}: expected keys and indices like 'data.0.b64_json' or 'images[0].url'")
    return [int(t) if t.isdigit() else t for t in re.findall(r"[^.\[\]]+", path)]


def lookup(obj: Any, path: list[str | int]) -> Any:
    """The value at ``path``; KeyError says where the walk stopped and what was there."""
    at: list[str] = []
    for token in path:
        if isinstance(token, int) and isinstance(obj, list):
            if token >= len(obj):
                raise KeyError(f"{'.'.join(at) or 'the response'} has {len(obj)} items, no [{token}]")
            obj = obj[token]
        elif isinstance(obj, dict) and str(token) in obj:
            obj = obj[str(token)]
        else:
            keys = ", ".join(sorted(map(str, obj))[:12]) if isinstance(obj, dict) else type(obj).__name__
            raise KeyError(f"{'.'.join(at) or 'the response'} has no {token!r} (it holds: {keys})")
        at.append(str(token))
    return obj
