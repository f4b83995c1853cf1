"""The http adapter's transport: retries with backoff, ``Retry-After``, a request budget and a response cache.

- **Retries**: a 408, 429 or 5xx status, a timeout, a dropped connection or a body the caller finds unusable
  (truncated JSON, an image that does not decode: :class:`Transient`) is retried up to ``retries`` times after
  ``min(max_backoff, backoff_base * 2**attempt)`` seconds, times a factor in [0.5, 1] drawn from an RNG seeded by
  the request (never the clock) when ``jitter`` is on. A ``Retry-After`` (seconds or an HTTP date) is a floor on
  that wait, and holds back every thread's next request until it has passed. Any other 4xx fails at once.
- **Budget**: ``max_requests`` counts every request this process sends, retries included (cache hits are free).
  Once spent, no request is sent: :class:`BudgetExhausted`; what was received is in the cache already.
- **Cache**: a response is written (atomically) once the caller has accepted it, under
  ``sha256(method, URL, JSON body, sample salt)``; header values — the secrets — are never part of the key nor
  written. A cached response is never requested again.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from evalkit.generate.adapter import GenerationError
from evalkit.generate.http_template import Secrets

RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504}) | frozenset(range(520, 530))


class HttpFailure(GenerationError):
    """A sample the service did not deliver: its index, URL and the last problem (never a header value)."""


class BudgetExhausted(GenerationError):
    """``max_requests`` is spent: no further request is sent."""


class Transient(Exception):
    """A response body that may be a truncated or garbled one: retried like a 5xx."""


class Permanent(Exception):
    """A response that retrying cannot fix (a response path that is not there)."""


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header in seconds: delta-seconds or an HTTP date; None where absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 5
    backoff_base: float = 1.0
    max_backoff: float = 60.0
    jitter: bool = True
    timeout: float = 60.0
    max_retry_after: float = 300.0

    def delay(self, attempt: int, salt: str, retry_after: float | None) -> float:
        """Seconds before attempt ``attempt + 1``: exponential, capped, jittered from (salt, attempt); at least
        the server's ``Retry-After``."""
        wait = min(self.max_backoff, self.backoff_base * 2**attempt)
        if self.jitter:
            wait *= 0.5 + 0.5 * random.Random(f"{salt}/{attempt}").random()
        return max(wait, retry_after or 0.0)


class Budget:
    """At most ``limit`` requests (None: no limit), counted across threads."""

    def __init__(self, limit: int | None):
        self.limit, self.used, self.received = limit, 0, 0
        self._lock = threading.Lock()

    def take(self) -> None:
        with self._lock:
            if self.limit is not None and self.used >= self.limit:
                raise BudgetExhausted(
                    f"request budget spent: max_requests = {self.limit} requests sent by this run (retries "
                    f"included); the {self.received} responses received are kept in the response cache and a "
                    "rerun does not request them again: raise max_requests to continue"
                )
            self.used += 1

    def got(self) -> None:
        with self._lock:
            self.received += 1


class ResponseCache:
    """Accepted responses on disk, one file each: a JSON line (the request without headers, latency, content
    type) then the body. ``root=None``: no cache."""

    def __init__(self, root: Path | None):
        self.root = Path(root) if root is not None else None

    @staticmethod
    def key(method: str, url: str, body: Any, salt: str) -> str:
        text = json.dumps([method.upper(), url, body, salt], sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def path(self, key: str) -> Path | None:
        return self.root / key[:2] / f"{key}.bin" if self.root is not None else None

    def get(self, key: str) -> tuple[dict[str, Any], bytes] | None:
        path = self.path(key)
        try:
            raw = path.read_bytes() if path is not None else None
        except OSError:
            return None
        if raw is None or b"\n" not in raw:
            return None
        head, body = raw.split(b"\n", 1)
        try:
            meta = json.loads(head)
        except ValueError:
            return None
        return (meta, body) if isinstance(meta, dict) and meta.get("length") == len(body) else None

    def put(self, key: str, meta: dict[str, Any], body: bytes) -> None:
        path = self.path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        head = json.dumps({**meta, "length": len(body)}, sort_keys=True).encode()
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(head + b"\n" + body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


Check = Callable[[bytes, str], Any]  # (body, content type) -> the accepted value; raises Transient or Permanent


class HttpClient:
    """Sends requests with the policy above, one ``requests.Session`` per thread."""

    def __init__(self, secrets: Secrets, policy: RetryPolicy, budget: Budget, cache: ResponseCache):
        self.secrets, self.policy, self.budget, self.cache = secrets, policy, budget, cache
        self._local = threading.local()
        self._sessions: list[Any] = []
        self._lock = threading.Lock()
        self._not_before = 0.0  # monotonic time before which no request is sent (a Retry-After)
        self.stopping = threading.Event()  # set: retries end at once (a sample failed, or the run is stopping)

    def fetch(self, method: str, url: str, body: Any, *, salt: str, where: str, check: Check) -> tuple[Any, float]:
        """``check(body)`` of the cached or fetched response, and the seconds its request took (as recorded when
        it was fetched, for a cached one). ``where`` names the sample and URL in every error message."""
        key = self.cache.key(method, url, body, salt)
        hit = self.cache.get(key)
        if hit is not None:
            meta, data = hit
            try:
                return check(data, str(meta.get("content_type", ""))), float(meta.get("seconds", 0.0))
            except (Transient, Permanent) as e:
                raise HttpFailure(self._say(f"{where}: cached response {self.cache.path(key)}: {e}")) from None
        last = "no attempt"
        for attempt in range(self.policy.retries + 1):
            try:
                outcome = self._attempt(method, url, body, check)
            except Permanent as e:
                raise HttpFailure(self._say(f"{where}: {e}")) from None
            if isinstance(outcome, _Accepted):
                meta = {"method": method, "url": url, "body": body, "salt": salt}
                self.cache.put(
                    key, {**meta, "content_type": outcome.content_type, "seconds": outcome.seconds}, outcome.data
                )
                self.budget.got()
                return outcome.value, outcome.seconds
            last, retry_after = outcome
            if isinstance(retry_after, float) and retry_after > self.policy.max_retry_after:
                raise HttpFailure(
                    self._say(
                        f"{where}: the service asks to wait {retry_after:.0f} s (Retry-After), more than "
                        f"max_retry_after = {self.policy.max_retry_after:g} s; last: {last}"
                    )
                )
            if attempt < self.policy.retries:
                wait = self.policy.delay(attempt, salt, retry_after)
                if retry_after:
                    with self._lock:
                        self._not_before = max(self._not_before, time.monotonic() + retry_after)
                if self.stopping.wait(wait):
                    raise HttpFailure(self._say(f"{where}: not retried, the run is stopping; last: {last}"))
        n = self.policy.retries + 1
        raise HttpFailure(self._say(f"{where}: failed after {n} attempt{'s' if n > 1 else ''}; last: {last}"))

    def _attempt(self, method: str, url: str, body: Any, check: Check) -> _Accepted | tuple[str, float | None]:
        """One request: the accepted response, or (what went wrong, Retry-After seconds) for one to retry."""
        import requests

        wait = self._not_before - time.monotonic()
        if wait > 0 and self.stopping.wait(wait):
            raise Permanent("not sent, the run is stopping")
        try:
            headers = self.secrets.headers()
        except KeyError as e:
            raise Permanent(e.args[0]) from None
        self.budget.take()
        t0 = time.perf_counter()
        try:
            resp = self._session().request(
                method, url, json=body, headers=headers, timeout=self.policy.timeout, allow_redirects=False
            )
            data = resp.content  # a body shorter than its Content-Length raises here
        except requests.Timeout:
            return f"no response within timeout = {self.policy.timeout:g} s", None
        except requests.RequestException as e:
            return f"{type(e).__name__} (connection refused, reset or a truncated body)", None
        seconds = time.perf_counter() - t0
        code = resp.status_code
        if code in RETRY_STATUSES:
            return f"HTTP {code}", retry_after_seconds(resp.headers.get("Retry-After"))
        if 300 <= code < 400:
            to = urlsplit(resp.headers.get("Location", "?"))._replace(query="", fragment="").geturl()
            raise Permanent(
                f"HTTP {code}: redirected to {to}; evalkit follows no redirect (the request's headers carry your "
                "credentials): give the final URL"
            )
        if code >= 400 or code < 200:
            snippet = " ".join(data[:300].decode("utf-8", "replace").split())
            raise Permanent(f"HTTP {code} {resp.reason or ''}: {snippet}".strip())
        content_type = resp.headers.get("Content-Type", "")
        try:
            value = check(data, content_type)
        except Transient as e:
            return str(e), None
        return _Accepted(value, data, content_type, seconds)

    def _session(self) -> Any:
        import requests

        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(session)
        return session

    def _say(self, text: str) -> str:
        return self.secrets.redact(text)

    def close(self) -> None:
        with self._lock:
            for s in self._sessions:
                s.close()
            self._sessions.clear()
        self._local = threading.local()


@dataclass
class _Accepted:
    value: Any
    data: bytes
    content_type: str
    seconds: float
