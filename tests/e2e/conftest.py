"""Browser tests: the real app served by uvicorn on a free loopback port, driven by Debian's chromium.

Playwright never downloads a browser here: it launches /usr/bin/chromium (deploy/browser.sh installs it).
One server and one browser per module; every test gets a fresh browser context (no shared cookies).
"""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, sync_playwright

from marketplace.app import create_app
from tests.conftest import make_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class LiveServer:
    """The served app: its base URL."""

    url: str


def _wait_until_healthy(url: str, server: uvicorn.Server, thread: threading.Thread) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    last: object = None
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the app server stopped while starting; see the log above")
        if server.started:
            try:
                response = httpx.get(f"{url}/health", timeout=5.0)
                if response.status_code == 200:
                    return
                last = f"{response.status_code} {response.text[:200]}"
            except httpx.HTTPError as exc:
                last = exc
        time.sleep(0.05)
    raise RuntimeError(f"the app did not answer 200 on /health within {START_TIMEOUT:.0f} s (last: {last})")


@pytest.fixture(scope="module")
def live_server(database_url: str, var_dir: Path) -> Iterator[LiveServer]:
    """The real app (create_app) under uvicorn in a background thread, on a free 127.0.0.1 port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the port is ours from here on: no race with other processes
    port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    app = create_app(make_settings(database_url, var_dir, public_url=url))
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    # uvicorn installs signal handlers only when it runs in the main thread, so the test run keeps its own.
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    try:
        _wait_until_healthy(url, server, thread)
        yield LiveServer(url=url)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)


@pytest.fixture(scope="module")
def playwright_() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_: Playwright) -> Iterator[Browser]:
    """One headless chromium for the module."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Debian's chromium is missing: run `bash deploy/browser.sh` (never `playwright install`)")
    browser = playwright_.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.fixture
def browser_locale() -> str:
    """The browser's language (sent as Accept-Language); override with indirect parametrisation."""
    return "en-US"


@pytest.fixture
def context(browser: Browser, live_server: LiveServer, browser_locale: str) -> Iterator[BrowserContext]:
    """A fresh browser profile for each test: no cookies, no storage."""
    ctx = browser.new_context(base_url=live_server.url, locale=browser_locale, viewport={"width": 1280, "height": 860})
    ctx.set_default_timeout(10_000)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    """A tab in the test's browser context."""
    return context.new_page()
