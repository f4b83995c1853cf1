"""``adapter: http``: a remote generator behind an API (a hosted model, an in-house server).

Two kinds of endpoint:

- ``kind: openai`` — an OpenAI-images-compatible service: ``POST {base_url}/v1/images/generations`` with
  ``{"model", "prompt", "n": 1, "size": "WxH", "response_format": "b64_json", **extra_body}``; the image is
  ``data[0].b64_json`` (or ``data[0].url``).
- ``kind: template`` — any JSON API: ``url`` and ``body`` templates with placeholders (:mod:`http_template`), and
  ``response_path`` to a base64 image or to an image URL on the same host (``''``: the body is the image).

Sample ``i``'s request is built from ``(seed, i)`` — ``{seed}`` is :func:`~evalkit.generate.seeding.sample_seed`
— and its response is cached under that request (:mod:`http_client`), so a resumed or repeated run sends no
request twice. Requests run ``concurrency`` at a time; images come back in index order, decoded to uint8. Each
image reports its request latency (``reported_seconds``) and ``cost``; the remote side's model calls and NFE
are not known: 0. Header values come from the environment at request time and are recorded nowhere.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import numpy as np
import torch

from evalkit.errors import ConfigError
from evalkit.generate.adapter import Adapter, GeneratedBatch, GenerationError, GenerationRequest, batched
from evalkit.generate.http_client import Budget, HttpClient, Permanent, ResponseCache, RetryPolicy, Transient
from evalkit.generate.http_options import OPENAI_HEADERS, option_problems
from evalkit.generate.http_template import Secrets, fill, lookup, parse_path, placeholders_in
from evalkit.generate.seeding import sample_seed
from evalkit.imagefiles import decode_rgb

OPENAI_PATH = "/v1/images/generations"


class HttpAdapter(Adapter):
    """Images from a remote service, one request per sample (options: README, "Remote generators")."""

    name = "http"

    def __init__(
        self,
        kind: str = "openai",
        base_url: str = "",
        model: str = "",
        extra_body: dict | None = None,
        url: str = "",
        method: str = "POST",
        body: dict | None = None,
        response_path: str = "",
        headers: dict | None = None,
        prompt: str = "{prompt}",
        width: int = 512,
        height: int = 512,
        concurrency: int = 4,
        timeout: float = 60.0,
        retries: int = 5,
        backoff_base: float = 1.0,
        max_backoff: float = 60.0,
        jitter: bool = True,
        max_retry_after: float = 300.0,
        max_requests: int | None = None,
        cost_per_image: float | None = None,
        cost_path: str = "",
        cache: bool = True,
        cache_dir: str = "",
        device: str = "cpu",
    ):
        options = {k: v for k, v in locals().items() if k not in ("self", "device")}
        if headers is None and kind == "openai":
            options["headers"] = headers = dict(OPENAI_HEADERS)
        problems = option_problems(options, env=False)  # a missing variable fails the request that needs it
        if problems:
            raise ConfigError("adapter http: " + "; ".join(problems))
        self.options = options
        self.kind, self.method, self.model = kind, method, model
        self.width, self.height, self.concurrency = width, height, concurrency
        self.endpoint = _openai_url(base_url) if kind == "openai" else url
        self.prompt = prompt
        self.response_path = parse_path(response_path)
        self.cost_path = parse_path(cost_path) if cost_path else None
        self.cost_per_image = cost_per_image
        self.secrets = Secrets(headers or {})
        root = Path(cache_dir) if cache_dir else _default_cache_dir()
        self.cache = ResponseCache(root if cache else None)
        policy = RetryPolicy(retries, backoff_base, max_backoff, jitter, timeout, max_retry_after)
        self.budget = Budget(max_requests)
        self.client = HttpClient(self.secrets, policy, self.budget, self.cache)

    @classmethod
    def preflight(cls, options: dict[str, Any]) -> list[str]:
        """The run's preflight hook: every problem with the suite's options, unset environment variables too."""
        full = {**_defaults(), **options}
        if full["headers"] is None and full["kind"] == "openai":
            full["headers"] = dict(OPENAI_HEADERS)
        return option_problems(full)

    def info(self) -> dict[str, Any]:
        """What the run records: the endpoint and the header *names* with the variables they read, never values."""
        return {
            "adapter": "http",
            "kind": self.kind,
            "endpoint": self.endpoint,
            "method": self.method,
            **({"model": self.model} if self.model else {}),
            "headers": self.secrets.names(),
            "size": [self.width, self.height],
            "model_calls": "unknown (remote service)",
        }

    def expected_model_calls(self, sampler: str, steps: int, options: dict[str, Any]) -> int:
        return 0  # the remote side's model calls are not known; none are made here

    def dry_run_note(self) -> str:
        return "a remote service: its model calls are unknown; one request per sample not in the response cache"

    def close(self) -> None:
        self.client.close()

    # -- generation ------------------------------------------------------------------------------------------
    def generate(self, request: GenerationRequest) -> Iterator[GeneratedBatch]:
        self._check_conditions(request)
        n, size = len(request.indices), None
        pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="evalkit-http")
        futures: dict[int, Future] = {}
        submitted = 0
        try:
            for sl in batched(request.indices, request.batch_size):
                while submitted < min(n, sl.stop + 2 * self.concurrency):  # keep every worker busy meanwhile
                    futures[submitted] = pool.submit(self._sample, request, submitted)
                    submitted += 1
                got = [futures.pop(k).result() for k in range(sl.start, sl.stop)]  # in index order
                size = size or (got[0][0].shape[1:], int(request.indices[sl.start]))
                for k, (img, _, _) in zip(range(sl.start, sl.stop), got):
                    _check_size(img, size, int(request.indices[k]))
                yield GeneratedBatch(
                    torch.from_numpy(np.stack([g[0] for g in got])),
                    np.asarray(request.indices[sl]),
                    model_calls=0,
                    nfe=0,
                    reported_seconds=[g[1] for g in got],
                    cost=[g[2] for g in got] if self.cost_path or self.cost_per_image is not None else None,
                )
        finally:  # requests in flight finish (and are cached); no new one is sent, no retry waited for
            if futures:  # left over: a sample failed, or the consumer stopped
                self.client.stopping.set()
            pool.shutdown(wait=True, cancel_futures=True)
            self.client.stopping.clear()

    def _check_conditions(self, request: GenerationRequest) -> None:
        """The conditions the request's placeholders need are in the suite."""
        sent = placeholders_in([self.options.get("url"), self.options.get("body"), self.options.get("extra_body")])
        if self.kind == "openai" or "prompt" in sent:  # the prompt option is sent: what it reads is needed
            sent = (sent - {"prompt"}) | placeholders_in(self.prompt)
        if "prompt" in sent and request.prompts is None:
            raise ConfigError(
                "adapter http: the request needs a prompt and the suite has none: set 'conditions: {prompts: ...}' "
                "or the option prompt, e.g. 'a photo of the digit {class}'"
            )
        if "class" in sent and request.labels is None:
            raise ConfigError("adapter http: the request uses {class} and the suite has no classes (conditions)")

    def _values(self, request: GenerationRequest, k: int) -> dict[str, Any]:
        i = int(request.indices[k])
        seed = sample_seed(request.seed, i)
        values = {
            "seed": seed,
            "seed32": seed % 2**32,
            "steps": int(request.steps),
            "guidance": float(request.guidance),
            "width": self.width,
            "height": self.height,
            "class": int(request.labels[k]) if request.labels is not None else None,
            "index": i,
            "prompt": request.prompts[k] if request.prompts is not None else None,
        }
        values["prompt"] = str(fill(self.prompt, values))
        return values

    def _request(self, values: dict[str, Any]) -> tuple[str, Any]:
        """The sample's URL and JSON body."""
        if self.kind == "openai":
            body = {"prompt": values["prompt"], "n": 1, "size": f"{self.width}x{self.height}"}
            body = {**({"model": self.model} if self.model else {}), **body, "response_format": "b64_json"}
            return self.endpoint, {**body, **fill(self.options.get("extra_body") or {}, values)}
        return fill(self.endpoint, values, url=True), fill(self.options.get("body"), values)

    def _sample(self, request: GenerationRequest, k: int) -> tuple[np.ndarray, float, float | None]:
        """Sample ``k`` of the request: its image (3, H, W) uint8, its request seconds and its cost."""
        values = self._values(request, k)
        url, body = self._request(values)
        salt, where = str(values["seed"]), f"sample {values['index']} ({self.method} {url})"
        if not self.response_path and self.kind == "template":
            image, seconds = self.client.fetch(self.method, url, body, salt=salt, where=where, check=_image_check)
            return image, seconds, self.cost_per_image

        def check(data: bytes, content_type: str) -> tuple[np.ndarray, float | None, float]:
            obj = _json(data, content_type)
            image, extra = self._image_from(obj, url, salt, values["index"])
            return image, self._cost(obj), extra

        (image, cost, extra), seconds = self.client.fetch(self.method, url, body, salt=salt, where=where, check=check)
        return image, seconds + extra, cost

    def _image_from(self, obj: Any, url: str, salt: str, index: int) -> tuple[np.ndarray, float]:
        """The image a JSON response holds (base64) or points to (a URL on the same host, fetched): (image, the
        seconds the image's own request took)."""
        try:
            if self.kind == "openai":
                first = lookup(obj, ["data", 0])
                value = first.get("b64_json") or first.get("url") if isinstance(first, dict) else None
                if not isinstance(value, str):
                    raise KeyError("data[0] has neither b64_json nor url")
            else:
                value = lookup(obj, self.response_path)
        except KeyError as e:
            raise Permanent(f"no image in the response: {e.args[0]}") from None
        if not isinstance(value, str):
            raise Permanent(f"the response path leads to {type(value).__name__}, not a base64 image or a URL")
        if not value.startswith(("http://", "https://", "/")):
            return _image_check(_b64(value), ""), 0.0
        target = urljoin(url, value)
        if _origin(target) != _origin(url):
            raise Permanent(
                f"the image URL is on {urlsplit(target).netloc}, not on {urlsplit(url).netloc}: evalkit fetches "
                "images only from the host it sent the request to (the request's headers carry your credentials, "
                "and a response must not steer the run to another server); ask the service for b64_json"
            )
        where = f"sample {index} (GET {target})"
        return self.client.fetch("GET", target, None, salt=salt, where=where, check=_image_check)

    def _cost(self, obj: Any) -> float | None:
        if self.cost_path is None:
            return self.cost_per_image
        try:
            value = lookup(obj, self.cost_path)
        except KeyError as e:
            raise Permanent(f"cost_path: {e.args[0]}") from None
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise Permanent(f"cost_path leads to {type(value).__name__}, not a number")
        try:
            return float(value)
        except ValueError:
            raise Permanent(f"cost_path leads to {value!r}, not a number") from None


def _image_check(data: bytes, content_type: str) -> np.ndarray:
    """A body that must be an image: uint8 (3, H, W), RGB; one that does not decode is retried (it may be cut)."""
    try:
        rgb = decode_rgb(data)  # the one decoder (evalkit.imagefiles): the same pixels as a file of these bytes
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError ... on a bad or truncated file
        head = data[:24].decode("ascii", "replace").encode("unicode_escape").decode()
        kind = f"{content_type}, " if content_type else ""
        raise Transient(f"not a decodable image ({kind}{len(data)} bytes, starts {head!r}): {e}") from None
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def _json(data: bytes, content_type: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        head = " ".join(data[:80].decode("utf-8", "replace").split())
        raise Transient(
            f"the response is not JSON ({content_type or 'no content type'}, {len(data)} bytes, starts "
            f"{head!r}): truncated, or an error page?"
        ) from None


def _b64(value: str) -> bytes:
    if value.startswith("data:"):
        value = value.partition(",")[2]
    try:
        return base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        raise Transient(f"the image is not valid base64 ({len(value)} characters)") from None


def _check_size(image: np.ndarray, first: tuple[tuple[int, int], int], index: int) -> None:
    (h, w), i0 = first
    if tuple(image.shape[1:]) != (h, w):
        raise GenerationError(
            f"sample {index} is {image.shape[2]}x{image.shape[1]}, sample {i0} is {w}x{h}: a cell's images must share "
            "one size (evalkit does not resize generated images; each extractor resizes as its mode says); ask the "
            "service for one size (options width, height)"
        )


def _origin(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port or {"http": 80, "https": 443}.get(parts.scheme)


def _openai_url(base: str) -> str:
    base = base.rstrip("/")
    return base + ("/images/generations" if base.endswith("/v1") else OPENAI_PATH)


def _default_cache_dir() -> Path:
    """evalkit's cache folder (``$EVALKIT_CACHE_DIR`` or ``~/.cache/evalkit``, as the reference cache's) /http."""
    return Path(os.environ.get("EVALKIT_CACHE_DIR") or Path.home() / ".cache" / "evalkit") / "http"


def _defaults() -> dict[str, Any]:
    params = inspect.signature(HttpAdapter.__init__).parameters.values()
    return {p.name: p.default for p in params if p.name not in ("self", "device")}
