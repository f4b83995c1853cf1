"""The http adapter's options, checked at once (``evalkit run`` preflight, ``--dry-run`` and the constructor)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from evalkit.generate.http_template import PLACEHOLDERS, has_env_reference, header_problems, parse_path

KINDS = ("openai", "template")
METHODS = ("GET", "POST", "PUT")
OPENAI_HEADERS = {"Authorization": "Bearer ${OPENAI_API_KEY}"}
_WORD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# options only one kind takes, and their defaults
_ONLY = {"base_url": "openai", "model": "openai", "extra_body": "openai", "url": "template", "body": "template"}
_ONLY_DEFAULTS = {"base_url": "", "model": "", "extra_body": None, "url": "", "body": None}


def option_problems(o: dict[str, Any], *, env: bool = True) -> list[str]:
    """Every problem with the adapter's options ``o`` (defaults filled in); ``env``: also environment variables
    that headers read and that are not set."""
    kind = o.get("kind")
    if kind not in KINDS:
        return [f"kind: expected one of {', '.join(KINDS)}; got {kind!r}"]
    problems = [
        f"{name}: an option of kind {want}, not {kind}"
        for name, want in _ONLY.items()
        if want != kind and o.get(name) != _ONLY_DEFAULTS[name]
    ]
    where = "base_url" if kind == "openai" else "url"
    problems += _url_problems(where, o.get(where))
    method = o.get("method")
    if method not in METHODS:
        problems.append(f"method: expected one of {', '.join(METHODS)}; got {method!r}")
    elif method == "GET" and o.get("body") is not None:
        problems.append("body: a GET request has no body (put placeholders in the url's query instead)")
    if kind == "openai" and method != "POST":
        problems.append("method: an OpenAI images endpoint takes POST")
    for name in ("url", "base_url", "body", "extra_body", "prompt"):
        if has_env_reference(o.get(name)):
            problems.append(
                f"{name}: environment variables (${{VAR}}) are read only in headers: a secret anywhere else would "
                "reach the response cache and error messages"
            )
        problems += [
            f"{name}: unknown placeholder {{{w}}}; known: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
            for w in sorted(_words(o.get(name)) - set(PLACEHOLDERS))
        ]
    for name in ("body", "extra_body"):
        if o.get(name) is not None and not isinstance(o.get(name), dict | list):
            problems.append(f"{name}: expected a JSON object (a mapping) with placeholders in its strings")
    if not isinstance(o.get("prompt"), str):
        problems.append("prompt: expected a string template, e.g. '{prompt}' or 'a photo of the digit {class}'")
    problems += header_problems(o.get("headers"), check_env=env)
    problems += _path_problems(o) + _number_problems(o)
    return problems


def _url_problems(name: str, url: Any) -> list[str]:
    if not isinstance(url, str) or not url:
        return [f"{name}: required, e.g. 'http://127.0.0.1:8000'"]
    parts = urlsplit(url.replace("{", "").replace("}", ""))
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return [f"{name}: expected an http:// or https:// URL; got {url!r}"]
    if parts.username or parts.password:
        return [f"{name}: credentials in the URL would be recorded in run.json: send them in a header"]
    if "{" in parts.netloc or _words(urlsplit(url).netloc):
        return [f"{name}: placeholders may appear in the path and query, not in the host"]
    return []


def _path_problems(o: dict[str, Any]) -> list[str]:
    problems = []
    for name in ("response_path", "cost_path"):
        value = o.get(name)
        if not isinstance(value, str):
            problems.append(f"{name}: expected a string like 'data.0.b64_json' or 'images[0].url'")
            continue
        try:
            parse_path(value)
        except ValueError as e:
            problems.append(f"{name}: {e}")
    if o.get("kind") == "openai" and o.get("response_path"):
        problems.append("response_path: kind openai reads data[0].b64_json (or data[0].url); use kind template")
    if o.get("cost_path") and o.get("cost_per_image") is not None:
        problems.append("cost_per_image, cost_path: give one (a fixed price or a field of the response), not both")
    return problems


def _number_problems(o: dict[str, Any]) -> list[str]:
    integers = {"concurrency": 1, "retries": 0, "width": 1, "height": 1, "max_requests": 1}
    numbers = {"timeout": 0, "backoff_base": 0, "max_backoff": 0, "max_retry_after": 0, "cost_per_image": 0}
    nullable = ("max_requests", "cost_per_image")
    problems = []
    for name, low in {**integers, **numbers}.items():
        value = o.get(name)
        if value is None and name in nullable:
            continue
        ok = isinstance(value, int) if name in integers else isinstance(value, int | float)
        if isinstance(value, bool) or not ok or value < low or (name == "timeout" and value == 0):
            what = "an integer" if name in integers else "a number"
            bound = "> 0" if name == "timeout" else f">= {low}"
            problems.append(f"{name}: expected {what} {bound}{' or null' if name in nullable else ''}; got {value!r}")
    if not isinstance(o.get("cache_dir"), str):
        problems.append("cache_dir: expected a folder path (a string); '' is evalkit's cache folder")
    return problems


def _words(template: Any) -> set[str]:
    if isinstance(template, str):
        return set(_WORD.findall(template))
    if isinstance(template, dict):
        return set().union(set(), *(_words(v) for v in template.values()))
    if isinstance(template, list):
        return set().union(set(), *(_words(v) for v in template))
    return set()
