"""Open a local HTML file in headless Chromium, offline, and record what a reader would see.

The browser is driven with Playwright (``playwright``, in the ``dev`` extras), but never with a
browser Playwright downloads: the tests use the system's Chromium (Debian package ``chromium``),
found as $EVALKIT_CHROMIUM, then ``chromium``/``chromium-browser``/``google-chrome`` on PATH, and
only then a Chromium that ``playwright install`` may have put in Playwright's own cache.
Nothing here downloads anything.

Networking is off three ways: the browser context is ``offline``, every request except the file
itself is aborted by a route (and recorded as blocked), and the browser gets a dead proxy and a host
resolver that resolves nothing. Every request the page makes is still recorded, so a test can
assert that the file itself is the only one.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
WIDTH, HEIGHT = 1366, 900  # a laptop screen

# Flags for headless as root in a container; the last group cuts the browser off the network.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND",
]


def find_chromium() -> str | None:
    """Path of a Chromium binary ($EVALKIT_CHROMIUM first, then PATH), or None when none is installed."""
    env = os.environ.get("EVALKIT_CHROMIUM")
    if env:
        return env if Path(env).exists() else shutil.which(env)
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def why_no_browser() -> str | None:
    """None when a browser test can run here, else the reason it cannot (for a loud skip)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return (
            "PLAYWRIGHT NOT INSTALLED: the HTML report was NOT checked in a browser. "
            "Install the test extras with `pip install -e '.[dev]'`."
        )
    if find_chromium() is None and _playwright_chromium() is None:
        return (
            "HEADLESS CHROMIUM NOT INSTALLED: the HTML report was NOT checked in a browser. "
            "Install it with `apt-get install -y chromium` (or set EVALKIT_CHROMIUM)."
        )
    return None


def _playwright_chromium() -> str | None:
    """Playwright's own Chromium, if `playwright install chromium` was ever run here (never run by us)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        path = p.chromium.executable_path
    return path if path and Path(path).exists() else None


@dataclass
class PageLog:
    """What happened while a page was open: console errors, requests, blocked requests, dialogs."""

    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def network_requests(self) -> list[str]:
        """Requested URLs except inline ``data:`` ones (those never touch the network)."""
        return [u for u in self.requests if not u.startswith("data:")]


@contextlib.contextmanager
def chromium() -> Iterator[object]:
    """A headless Chromium (a Playwright ``Browser``) for :func:`open_offline`; closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=find_chromium(), args=ARGS, timeout=60_000)
        try:
            yield browser
        finally:
            browser.close()


@contextlib.contextmanager
def open_offline(browser, path: str | os.PathLike, *, timeout_s: float = 30.0) -> Iterator[tuple[object, PageLog]]:
    """Open a local file in a fresh offline context at laptop size, wait for its load event, and
    yield ``(page, log)``: a Playwright ``Page`` and the :class:`PageLog` filled while it is open."""
    url = Path(path).resolve().as_uri()
    log = PageLog()
    context = browser.new_context(
        offline=True, viewport={"width": WIDTH, "height": HEIGHT}, device_scale_factor=1, service_workers="block"
    )
    context.set_default_timeout(timeout_s * 1000)

    def only_the_file(route) -> None:
        if route.request.url == url:
            route.continue_()
        else:
            log.blocked.append(route.request.url)
            route.abort()

    def on_dialog(dialog) -> None:
        log.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.accept()

    def on_console(msg) -> None:
        if msg.type in ("error", "assert"):
            where = msg.location.get("url") if msg.location else ""
            log.console_errors.append(f"{msg.type}: {msg.text} {where or ''}".strip())

    try:
        context.route("**/*", only_the_file)
        context.on("request", lambda request: log.requests.append(request.url))
        page = context.new_page()
        page.on("console", on_console)  # console.error/assert and browser log errors (failed loads, CSP)
        page.on("pageerror", lambda exc: log.console_errors.append(f"uncaught: {exc}"))
        page.on("dialog", on_dialog)
        page.goto(url, wait_until="load")
        yield page, log
    finally:
        context.close()


def screenshot(page, path: str | os.PathLike, *, full_page: bool = False) -> Path:
    """PNG of the viewport (a laptop screen) or of the whole page."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=out, full_page=full_page, timeout=60_000)
    return out


def pdf(page, path: str | os.PathLike) -> Path:
    """The page as printed (A4, print media styles, backgrounds)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    margin = "0.4in"  # Chromium's own default print margins
    page.pdf(
        path=out,
        format="A4",
        print_background=True,
        margin={"top": margin, "bottom": margin, "left": margin, "right": margin},
    )
    return out
