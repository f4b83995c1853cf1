"""Open an HTML file in headless Chromium with networking disabled and see what a reader would see.

Why this exists: a report is only useful if it renders offline in a real browser, so the tests load
it in Chromium and check console errors, network requests, decoded images and sections. We drive
Chromium over the Chrome DevTools Protocol on ``--remote-debugging-pipe`` (file descriptors 3 and 4,
NUL-separated JSON): no TCP port, no websocket library, no Python dependency beyond the standard
library. Only the browser itself is needed (Debian package ``chromium``).

Networking is off three ways: DevTools network emulation ``offline``, a dead proxy, and a host
resolver that resolves nothing. Every request the page makes is still recorded, so a test can
assert that the file itself is the only one.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")

# Flags that work headless as root in a container; the last group cuts the browser off the network.
BASE_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
    "--disable-dev-shm-usage", "--no-default-browser-check", "--metrics-recording-only",
    "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


class BrowserError(RuntimeError):
    """Chromium could not be started, crashed, or did not answer in time."""


def find_chromium() -> str | None:
    """Path of a Chromium binary ($EVALKIT_CHROMIUM first), or None when none is installed."""
    env = os.environ.get("EVALKIT_CHROMIUM")
    if env:
        return env if Path(env).exists() else shutil.which(env)
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageLog:
    """What happened while a page was open: console errors, requests, dialogs (e.g. alert())."""

    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def network_requests(self) -> list[str]:
        """Requested URLs except inline ``data:`` ones (those never touch the network)."""
        return [u for u in self.requests if not u.startswith("data:")]


class _Pipe:
    """CDP messages over Chromium's debugging pipe; a reader thread queues what comes back."""

    def __init__(self, write_fd: int, read_fd: int):
        self._w = os.fdopen(write_fd, "wb", buffering=0)
        self._r = os.fdopen(read_fd, "rb", buffering=0)
        self._next_id = 0
        self.inbox: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read_loop, daemon=True).start()

    def _read_loop(self) -> None:
        buf = b""
        while True:
            chunk = self._r.read(1 << 16)
            if not chunk:
                self.inbox.put(None)  # the browser went away
                return
            buf += chunk
            *messages, buf = buf.split(b"\0")
            for m in messages:
                self.inbox.put(json.loads(m))

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> int:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        self._w.write(json.dumps(msg).encode() + b"\0")
        return self._next_id

    def close(self) -> None:
        for f in (self._w, self._r):
            with contextlib.suppress(OSError):
                f.close()


class Page:
    """One tab. Create it with :meth:`HeadlessChromium.open`."""

    def __init__(self, browser: HeadlessChromium, session: str):
        self.browser, self.session = browser, session
        self.log = PageLog()

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float | None = None) -> dict[str, Any]:
        return self.browser.call(method, params, session=self.session, timeout=timeout)

    def evaluate(self, expression: str, timeout: float | None = None) -> Any:
        """Value of a JS expression (promises awaited), or BrowserError if it threw."""
        res = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                             "awaitPromise": True}, timeout=timeout)
        if "exceptionDetails" in res:
            raise BrowserError(f"JS error: {res['exceptionDetails'].get('text')} "
                               f"{res['exceptionDetails'].get('exception', {}).get('description', '')}")
        return res.get("result", {}).get("value")

    def screenshot(self, path: str | os.PathLike, *, full_page: bool = False) -> Path:
        """PNG of the viewport (a laptop screen) or of the whole page."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True,
                          clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = self.call("Page.captureScreenshot", params, timeout=60)["data"]
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(data))
        return out

    def pdf(self, path: str | os.PathLike) -> Path:
        """The page as printed (A4, print media styles)."""
        data = self.call("Page.printToPDF", {"printBackground": True, "paperWidth": 8.27, "paperHeight": 11.69},
                         timeout=60)["data"]
        out = Path(path)
        out.write_bytes(base64.b64decode(data))
        return out

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        log = self.log
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            log.console_errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            d = params["exceptionDetails"]
            log.console_errors.append(f"{d.get('text')} {d.get('exception', {}).get('description', '')}".strip())
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            e = params["entry"]
            log.console_errors.append(f"{e.get('source')}: {e.get('text')} {e.get('url', '')}".strip())
        elif method == "Network.requestWillBeSent":
            log.requests.append(params["request"]["url"])
        elif method == "Page.javascriptDialogOpening":
            log.dialogs.append(f"{params.get('type')}: {params.get('message')}")
            self.browser.send("Page.handleJavaScriptDialog", {"accept": True}, session=self.session)


class HeadlessChromium:
    """A headless Chromium with its own throwaway profile; use as a context manager."""

    def __init__(self, executable: str | None = None, *, width: int = 1366, height: int = 900,
                 timeout: float = 30.0):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError("no Chromium found (apt-get install chromium, or set EVALKIT_CHROMIUM)")
        self.width, self.height, self.timeout = width, height, timeout
        self._pages: dict[str, Page] = {}
        self._replies: dict[int, dict[str, Any]] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._profile: str | None = None
        self._pipe: _Pipe | None = None
        self._stderr: IO[bytes] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> HeadlessChromium:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._profile = tempfile.mkdtemp(prefix="evalkit-chromium-")
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()

        def wire_fds() -> None:
            # In the child: fd 3 reads our commands, fd 4 writes replies. Move both above 10 first so
            # neither dup2 clobbers the other; dup2 makes the targets inheritable, while every other
            # descriptor Python opened is close-on-exec. (No pass_fds: it fails when the parent has
            # no fd 3 or 4 open.)
            hi_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
            hi_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        args = [self.executable, *BASE_FLAGS, f"--user-data-dir={self._profile}", "--remote-debugging-pipe",
                f"--window-size={self.width},{self.height}", "about:blank"]
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close(), read for error messages
        try:
            self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=self._stderr, close_fds=False, preexec_fn=wire_fds,
                                          start_new_session=True)
        finally:
            os.close(to_browser_r)
            os.close(from_browser_w)
        self._pipe = _Pipe(to_browser_w, from_browser_r)
        try:
            self.call("Browser.getVersion", timeout=max(self.timeout, 60))  # first answer: it is up
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                self.send("Browser.close")
                self._proc.wait(10)
            except (OSError, subprocess.TimeoutExpired, BrowserError):
                self._proc.kill()
                self._proc.wait(10)
        if self._pipe is not None:
            self._pipe.close()
        if self._profile:
            shutil.rmtree(self._profile, ignore_errors=True)
        self._proc = self._pipe = self._profile = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def stderr_tail(self, n: int = 2000) -> str:
        """The end of Chromium's stderr, for error messages."""
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-n:]

    # -- protocol --------------------------------------------------------------------------------
    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> int:
        if self._pipe is None:
            raise BrowserError("browser is not running")
        try:
            return self._pipe.send(method, params, session)
        except (BrokenPipeError, OSError) as e:
            raise BrowserError(f"Chromium went away: {e}\n{self.stderr_tail()}") from None

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float | None = None) -> dict[str, Any]:
        """Send a command and wait for its reply, dispatching events that arrive meanwhile."""
        msg_id = self.send(method, params, session)
        self._pump(lambda: msg_id in self._replies, timeout or self.timeout, f"reply to {method}")
        reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def _pump(self, done: Any, timeout: float, what: str) -> None:
        assert self._pipe is not None
        deadline = time.monotonic() + timeout
        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"timed out after {timeout:.0f}s waiting for {what}")
            try:
                msg = self._pipe.inbox.get(timeout=left)
            except queue.Empty:
                continue
            if msg is None:
                raise BrowserError(f"Chromium exited while waiting for {what}:\n{self.stderr_tail()}")
            if "id" in msg:
                self._replies[msg["id"]] = msg
            elif msg.get("sessionId") in self._pages:
                self._pages[msg["sessionId"]]._on_event(msg["method"], msg.get("params", {}))

    # -- pages -----------------------------------------------------------------------------------
    def open(self, path: str | os.PathLike, *, timeout: float | None = None) -> Page:
        """Open a local file in a new offline tab and wait for its load event."""
        url = Path(path).resolve().as_uri()
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = self._pages[session] = Page(self, session)
        for domain in ("Runtime", "Log", "Page", "Network"):
            page.call(f"{domain}.enable")
        page.call("Network.emulateNetworkConditions", {"offline": True, "latency": 0,
                                                        "downloadThroughput": -1, "uploadThroughput": -1})
        page.call("Emulation.setDeviceMetricsOverride", {"width": self.width, "height": self.height,
                                                          "deviceScaleFactor": 1, "mobile": False})
        nav = page.call("Page.navigate", {"url": url})
        if nav.get("errorText"):
            raise BrowserError(f"could not open {url}: {nav['errorText']}")
        self._wait_loaded(page, url, timeout or self.timeout)
        return page

    def _wait_loaded(self, page: Page, url: str, timeout: float) -> None:
        """Until the document at ``url`` has fired its load event (readyState 'complete'). Polled, so
        the order in which events and replies arrive does not matter."""
        deadline = time.monotonic() + timeout
        probe = f"document.readyState === 'complete' && location.href === {json.dumps(url)}"
        while time.monotonic() < deadline:
            try:
                if page.evaluate(probe, timeout=max(1.0, deadline - time.monotonic())):
                    return
            except BrowserError:  # the old document's context went away mid-call: ask again
                pass
            time.sleep(0.05)
        raise BrowserError(f"timed out after {timeout:.0f}s waiting for {url} to load")
