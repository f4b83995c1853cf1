"""The http adapter (issue 18) against a local fake service: a stdlib ThreadingHTTPServer on 127.0.0.1 serving
solid-colour PNGs (the colour tells the seed), with injected faults — 429 with Retry-After, 500, responses slower
than the client's timeout, truncated bodies, bodies that are no image."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from evalkit.cli import main
from evalkit.errors import EXIT_FAILED, EXIT_OK, ConfigError
from evalkit.generate import GenerationRequest, build_adapter
from evalkit.generate.adapter import GenerationError
from evalkit.generate.http_adapter import HttpAdapter
from evalkit.generate.http_client import retry_after_seconds
from evalkit.generate.seeding import sample_seed

KEY = "sk-test-9f8e7d6c5b4a-SECRET"
FAULTS = ("429", "500", "timeout", "truncated", "not-an-image")


def colour(seed: int) -> tuple[int, int, int]:
    return seed % 256, (seed >> 8) % 256, (seed >> 16) % 256


def png(seed: int, size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour(seed)).save(buf, format="PNG")
    return buf.getvalue()


class Service(ThreadingHTTPServer):
    """The fake API. ``fault_every``: the first attempt of every seed with ``seed % fault_every == 0`` fails, the
    kind of fault chosen by the seed; ``always``/``first``: a fault for every attempt / every seed's first one;
    ``log``: (time, path, seed, status) of every request (299: a 200 that carried a fault)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.lock = threading.Lock()
        self.log: list[tuple[float, str, int, int]] = []
        self.attempts: Counter = Counter()
        self.fault_every, self.always, self.first = 0, None, None
        self.delay, self.sleep_s, self.retry_after = 0.0, 1.5, "0"
        self.image_url = "/img/{seed}.png"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def ok(self, path_prefix: str = "/") -> Counter:
        """Successful image-carrying responses per seed."""
        with self.lock:
            return Counter(s for _, p, s, code in self.log if code == 200 and p.startswith(path_prefix))

    def handle_error(self, request, client_address) -> None:  # a client that gave up on a slow response
        pass


class Handler(BaseHTTPRequestHandler):
    server: Service

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:  # an image URL the JSON response pointed to
        if self.path.startswith("/moved/"):
            self.server.log.append((time.monotonic(), self.path, -1, 302))
            return self._redirect("http://elsewhere.example" + self.path)
        seed = int(self.path.rsplit("/", 1)[-1].split(".")[0])
        self._answer(seed, png(seed), "image/png")

    def do_POST(self) -> None:
        seed = int(json.loads(self.rfile.read(int(self.headers["Content-Length"])))["seed"])
        b64 = base64.b64encode(png(seed)).decode()
        if self.path == "/v1/images/generations":  # OpenAI-compatible, with the seed as an extra field
            answer = {"data": [{"b64_json": b64}]}
        elif self.path == "/gen-url":
            answer = {"images": [{"url": self.server.image_url.format(seed=seed)}], "cost": 0.25}
        else:
            answer = {"result": {"image": b64}}
        self._answer(seed, json.dumps(answer).encode(), "application/json")

    def _answer(self, seed: int, data: bytes, ctype: str) -> None:
        s = self.server
        sent = str(self.headers.get("Authorization"))
        if sent != f"Bearer {KEY}":  # echoes what it got, as some services do
            return self._send(seed, 401, json.dumps({"error": f"bad key: {sent}"}).encode())
        with s.lock:
            s.attempts[(self.path, seed)] += 1
            first = s.attempts[(self.path, seed)] == 1
        fault = s.always or (s.first if first else None)
        if fault is None and first and s.fault_every and seed % s.fault_every == 0:
            fault = FAULTS[(seed // 10) % 5]
        time.sleep(s.delay)
        if fault == "429":
            return self._send(seed, 429, b"slow down", {"Retry-After": s.retry_after})
        if fault == "500":
            return self._send(seed, 500, b"oops")
        if fault == "timeout":
            time.sleep(s.sleep_s)
        if fault == "truncated":
            return self._send(seed, 200, data, cut=len(data) // 2)
        if fault == "not-an-image":
            data = b"<html>maintenance</html>" if data[:1] == b"{" else b"GIF89a not really"
        self._send(seed, 200 if fault is None else 299, data, {"Content-Type": ctype})

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send(self, seed: int, code: int, data: bytes, headers: dict | None = None, cut: int | None = None) -> None:
        with self.server.lock:
            self.server.log.append((time.monotonic(), self.path, seed, code if cut is None else 206))
        self.send_response(200 if code == 299 else code)
        headers = {"Content-Length": str(len(data)), **(headers or {})}
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data[:cut])
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def service():
    srv = Service()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("MY_API_KEY", KEY)


FAST = {"backoff_base": 0.01, "max_backoff": 0.05, "timeout": 1.0}
HEADERS = {"Authorization": "Bearer ${MY_API_KEY}"}


def _template(service: Service, path: str = "/gen", **kw) -> HttpAdapter:
    opts = {"kind": "template", "url": service.url + path, "headers": HEADERS, **FAST}
    opts |= {"body": {"seed": "{seed}", "prompt": "{prompt}", "steps": "{steps}"}, "response_path": "result.image"}
    return HttpAdapter(**(opts | kw))


def _request(n: int, batch: int = 4, seed: int = 7) -> GenerationRequest:
    return GenerationRequest(
        np.arange(n, dtype=np.int64), seed, "ddim", 4, 1.0, batch, prompts=[f"p{i}" for i in range(n)]
    )


def _images(adapter: HttpAdapter, request: GenerationRequest):
    return list(adapter.generate(request))


def _colours(images: np.ndarray) -> list[tuple[int, int, int]]:
    return [tuple(int(c) for c in im[:, 0, 0]) for im in images]


def _all_text(*roots: Path) -> str:
    return "\n".join(p.read_bytes().decode("latin-1") for root in roots for p in sorted(root.rglob("*")) if p.is_file())


# -- through `evalkit run` -------------------------------------------------------------------------------------

SUITE = """\
name: {name}
models:
  - name: remote
    adapter: http
    options:
{options}
samplers: [ddim]
steps: [1]
samples: {n}
batch_size: {batch}
grid_samples: {n}
conditions: {{prompts: [a red square, a blue square, a green square]}}
metrics: [throughput]
timing: {{repeats: 1, warmup: 0}}
"""


def _suite(tmp_path: Path, name: str, n: int, batch: int, **options) -> Path:
    opts = {"headers": HEADERS, "backoff_base": 0.01, "max_backoff": 0.05, "timeout": 1.0, **options}
    lines = "\n".join(f"      {k}: {json.dumps(v)}" for k, v in opts.items())
    path = tmp_path / f"{name}.yaml"
    path.write_text(SUITE.format(name=name, options=lines, n=n, batch=batch))
    return path


def _run_images(out: Path) -> np.ndarray:
    (cell,) = [p for p in (out / "cells").iterdir() if p.is_dir()]
    with np.load(cell / "samples.npz") as f:
        return f["images"]


def test_200_images_with_10_percent_faults_through_evalkit_run_and_no_secret_written(
    service, api_key, tmp_path, capsys
):
    """Every sample arrives once and in order though a tenth of first attempts fail; the key is nowhere."""
    service.fault_every = 10
    openai = {"kind": "openai", "base_url": service.url, "model": "fake-diffusion", "extra_body": {"seed": "{seed}"}}
    suite = _suite(tmp_path, "http200", 200, 20, **openai, width=8, height=8, concurrency=8, cost_per_image=0.02)
    out, report = tmp_path / "run", tmp_path / "report.html"
    assert main(["run", str(suite), "--out", str(out), "-q"]) == EXIT_OK
    ok = service.ok("/v1/")
    assert len(ok) == 200  # the server served 200 distinct seeds
    faults = Counter(code for _, _, _, code in service.log if code != 200)
    assert sum(faults.values()) >= 10 and {429, 500, 206, 299} <= set(faults)
    images = _run_images(out)
    assert images.shape == (200, 3, 8, 8)  # none lost, none twice: sample i holds the image of (seed, i)
    assert _colours(images) == [colour(sample_seed(0, i)) for i in range(200)]
    assert main(["report", str(out), "-o", str(report)]) == EXIT_OK
    run_json = json.loads((out / "run.json").read_text())
    assert "${MY_API_KEY}" in json.dumps(run_json)  # the suite's text, never the value
    assert run_json["models"]["remote"]["headers"] == {"Authorization": ["MY_API_KEY"]}
    cache = Path(os.environ["EVALKIT_CACHE_DIR"])
    text = _all_text(out, report.parent, cache) + "".join(capsys.readouterr())
    assert KEY not in text and KEY[-10:] not in text


def test_kill_9_mid_run_then_resume_never_requests_a_cached_response(service, api_key, tmp_path):
    """A `kill -9`ed run leaves its received responses in the cache; the resumed run requests none of them."""
    service.delay = 0.05
    options = {"kind": "template", "url": service.url + "/gen-url", "response_path": "images[0].url"}
    options |= {"body": {"seed": "{seed}", "prompt": "{prompt}"}, "concurrency": 2}
    suite, out = _suite(tmp_path, "killed", 40, 4, **options), tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "evalkit", "run", str(suite), "--out", str(out), "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(service.ok("/img/")) < 12 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    time.sleep(0.2)  # requests the dead client had in flight have been answered
    cache = Path(os.environ["EVALKIT_CACHE_DIR"]) / "http"
    heads = [json.loads(p.read_bytes().split(b"\n", 1)[0]) for p in cache.rglob("*.bin")]
    cached = {(h["url"], int(h["salt"])) for h in heads}  # a request: its URL and the sample's seed
    assert 8 <= len({seed for _, seed in cached}) < 40  # 12 served, some in flight when killed
    before = len(service.log)
    service.delay = 0.0
    assert main(["run", str(suite), "--out", str(out), "-q"]) == EXIT_OK
    resumed = {(service.url + path, seed) for _, path, seed, _ in service.log[before:]}
    assert resumed and not resumed & cached  # no cached response was requested again
    assert len(service.ok("/img/")) == 40
    assert _colours(_run_images(out)) == [colour(sample_seed(0, i)) for i in range(40)]


def test_budget_spent_fails_the_cell_with_a_clear_error_and_keeps_what_was_received(service, api_key, tmp_path):
    options = {"kind": "template", "url": service.url + "/gen", "response_path": "result.image", "concurrency": 2}
    options["body"] = {"seed": "{seed}", "prompt": "{prompt}"}
    out = tmp_path / "run"
    suite = _suite(tmp_path, "budget", 12, 4, **options, max_requests=5)
    assert main(["run", str(suite), "--out", str(out), "-q"]) == EXIT_FAILED
    (record,) = [json.loads(p.read_text()) for p in (out / "cells").rglob("cell.json")]
    text = json.dumps(record)
    assert "request budget spent: max_requests = 5" in text and "raise max_requests" in text
    assert len(service.log) == 5
    # a second run (another folder, same cache) pays only for what the first did not receive
    suite = _suite(tmp_path, "budget", 12, 4, **options, max_requests=7)
    assert main(["run", str(suite), "--out", str(tmp_path / "run2"), "-q"]) == EXIT_OK
    assert len(service.log) == 12 and len(service.ok()) == 12


def test_a_rejected_key_fails_the_cell_and_is_written_nowhere(service, monkeypatch, tmp_path):
    monkeypatch.setenv("MY_API_KEY", "wrong-" + KEY)  # the service echoes the header it got in its 401 body
    options = {"kind": "template", "url": service.url + "/gen", "response_path": "result.image"}
    suite = _suite(tmp_path, "rejected", 4, 4, **options, body={"seed": "{seed}"})
    out = tmp_path / "run"
    assert main(["run", str(suite), "--out", str(out), "-q"]) == EXIT_FAILED
    text = _all_text(out)
    assert "HTTP 401" in text and "Bearer ${MY_API_KEY}" in text and KEY not in text


# -- the adapter on its own ------------------------------------------------------------------------------------


def test_retry_after_is_honoured(service, api_key):
    service.first, service.retry_after = "429", "1"  # every seed's first attempt
    adapter = _template(service, concurrency=2, retries=1)
    batches = _images(adapter, _request(2))
    assert [b.indices.tolist() for b in batches] == [[0, 1]]
    for seed in {s for _, _, s, _ in service.log}:
        times = [t for t, _, s, _ in service.log if s == seed]
        assert len(times) == 2 and times[1] - times[0] >= 1.0  # waited the header's second, not the 10 ms backoff
    later = formatdate(time.time() + 30, usegmt=True)
    assert 28 <= retry_after_seconds(later) <= 30 and retry_after_seconds("2") == 2.0
    assert retry_after_seconds("soon") is None


def test_order_timing_cost_and_cache(service, api_key):
    """Images in index order whatever the completion order; latency and cost per image; a repeat is free."""
    adapter = _template(service, "/gen-url", response_path="images[0].url", cost_path="cost", concurrency=4)
    service.delay = 0.02
    batches = _images(adapter, _request(10, batch=3))
    assert [b.indices.tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9]]
    b = batches[0]
    assert b.images.dtype.is_floating_point is False and b.images.shape == (3, 3, 8, 8)
    assert b.model_calls == 0 and b.nfe == 0 and b.cost == [0.25] * 3
    assert all(s >= 0.04 for s in b.reported_seconds)  # the JSON request and the image request, each delayed
    colours = [c for b in batches for c in _colours(b.images.numpy())]
    assert colours == [colour(sample_seed(7, i)) for i in range(10)]
    n = len(service.log)
    again = _images(adapter, _request(10, batch=5))
    assert len(service.log) == n and again[0].reported_seconds == b.reported_seconds + again[0].reported_seconds[3:]


def test_a_body_that_stays_unusable_fails_its_sample_with_index_and_url(service, api_key):
    service.always = "not-an-image"
    with pytest.raises(GenerationError, match=r"sample 0 \(POST http://127\.0\.0\.1:\d+/gen\): failed after 3"):
        _images(_template(service, retries=2, concurrency=1), _request(1))
    service.always = "truncated"
    with pytest.raises(GenerationError, match="truncated body"):
        _images(_template(service, retries=1, concurrency=1), _request(1))


def test_an_image_url_on_another_host_is_refused(service, api_key):
    service.image_url = "http://evil.example:8080/img/{seed}.png"
    with pytest.raises(GenerationError, match=r"on evil\.example:8080, not on 127\.0\.0\.1:\d+: evalkit fetches"):
        _images(_template(service, "/gen-url", response_path="images[0].url"), _request(1))
    assert len(service.log) == 1  # refused at once, not retried
    service.image_url = "/moved/{seed}.png"  # on the same host, but redirected elsewhere: not followed
    with pytest.raises(GenerationError, match=r"HTTP 302: redirected to http://elsewhere\.example/moved/"):
        _images(_template(service, "/gen-url", response_path="images[0].url"), _request(1, seed=8))
    assert [code for *_, code in service.log[1:]] == [200, 302]


def test_the_key_stays_out_of_errors_and_info(service, monkeypatch):
    monkeypatch.setenv("MY_API_KEY", "wrong-" + KEY)  # the server echoes the header it got in its 401 body
    adapter = _template(service)
    with pytest.raises(GenerationError, match=r"HTTP 401") as e:
        _images(adapter, _request(1))
    assert KEY not in str(e.value) and "Bearer ${MY_API_KEY}" in str(e.value)
    assert adapter.info()["headers"] == {"Authorization": ["MY_API_KEY"]} and KEY not in json.dumps(adapter.info())


def test_images_of_one_cell_must_share_a_size(service, api_key, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "png", lambda seed: _png_sized(seed))
    with pytest.raises(GenerationError, match=r"must share one size"):
        _images(_template(service), _request(4))


def _png_sized(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8 + seed % 2, 8), colour(seed)).save(buf, format="PNG")
    return buf.getvalue()


def test_options_are_checked_before_anything_runs(monkeypatch):
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    problems = HttpAdapter.preflight(
        {
            "kind": "template",
            "url": "http://127.0.0.1:1/{foo}",
            "headers": {"Authorization": "Bearer sk-literal", "X-Api-Key": "${NOT_SET_KEY}"},
            "body": {"key": "${NOT_SET_KEY}"},
            "model": "m",
            "concurrency": 0,
        }
    )
    text = "\n".join(problems)
    for expected in (
        "model: an option of kind openai",
        "url: unknown placeholder {foo}",
        "headers.Authorization: a credential must come from the environment",
        "headers.X-Api-Key: environment variable NOT_SET_KEY is not set",
        "body: environment variables (${VAR}) are read only in headers",
        "concurrency: expected an integer >= 1",
    ):
        assert expected in text
    assert HttpAdapter.preflight({"base_url": "http://x", "headers": {"Authorization": "Bearer ${HOME}"}}) == []
    with pytest.raises(ConfigError, match="kind: expected one of openai, template"):
        build_adapter("http", kind="grpc")


def test_class_conditional_prompts_from_the_prompt_option(service, api_key):
    """A suite with classes and no prompts: the prompt option makes one from {class}."""
    adapter = _template(service, prompt="a photo of the digit {class}")
    request = GenerationRequest(np.arange(3, dtype=np.int64), 7, "ddim", 4, 1.0, 3, labels=np.array([4, 5, 6]))
    (batch,) = _images(adapter, request)
    heads = [json.loads(p.read_bytes().split(b"\n", 1)[0]) for p in adapter.cache.root.rglob("*.bin")]
    assert sorted(h["body"]["prompt"] for h in heads) == [f"a photo of the digit {c}" for c in (4, 5, 6)]
    assert {h["body"]["steps"] for h in heads} == {4} and all(isinstance(h["body"]["seed"], int) for h in heads)
    with pytest.raises(ConfigError, match="the request needs a prompt and the suite has none"):
        _images(_template(service), request)
