"""Browser tests: Debian's headless Chromium driven by Playwright, against the real app (`jobhook`).

Playwright's own browser downloads are never used: the tests launch `/usr/bin/chromium` (the Makefile
installs it). Without it, or without the `playwright` package, every test here is skipped and says why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.conftest import Service

if TYPE_CHECKING:
    from playwright.async_api import Browser, ConsoleMessage, Page, Response

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HAVE_PLAYWRIGHT = importlib.util.find_spec("playwright") is not None


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    if not HAVE_PLAYWRIGHT:
        pytest.skip("the playwright package is not installed: pip install -e '.[dev]'")
    if not CHROMIUM.is_file():
        pytest.skip(f"Debian chromium is not installed: {CHROMIUM} is missing (sudo apt-get install chromium)")


@dataclasses.dataclass
class Tab:
    """One browser page on a running jobhook, and what it did: every URL it asked for, and every
    problem: a script error, a console error (e.g. a CSP violation), an answer of 400 or more.

    A test that expects a refusal lists it in `expected` ("401 /dashboard/login")."""

    page: Page
    svc: Service
    urls: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    expected: list[str] = dataclasses.field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        # A failed load is reported (with its URL) by on_response.
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            self.errors.append(f"console: {message.text}")

    def on_response(self, response: Response) -> None:
        if response.status >= 400:
            seen = f"{response.status} {response.url.removeprefix(self.svc.url)}"
            if not any(seen.startswith(expected) for expected in self.expected):
                self.errors.append(f"answer: {seen}")


DashboardFactory = Callable[..., contextlib.AbstractAsyncContextManager[Tab]]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
def dashboard(browser: Browser) -> DashboardFactory:
    """`async with dashboard(svc) as tab:` a fresh browser context on `svc`, closed on the way out.

    Use it inside `async with jobhook(…) as svc`, so that the page (and its live stream) is gone before
    the service stops; the test fails if the page raised a script error or logged a console error.
    """

    @contextlib.asynccontextmanager
    async def open_tab(svc: Service, *, width: int = 1280, height: int = 800) -> AsyncIterator[Tab]:
        # A locale and zone of their own (12-hour, not UTC): the dashboard must show UTC whatever they are.
        context = await browser.new_context(
            base_url=svc.url,
            viewport={"width": width, "height": height},
            locale="en-US",
            timezone_id="America/New_York",
        )
        context.set_default_timeout(10_000)
        try:
            page = await context.new_page()
            tab = Tab(page, svc)
            page.on("request", lambda request: tab.urls.append(request.url))
            page.on("pageerror", lambda error: tab.errors.append(f"script: {error}"))
            page.on("console", tab.on_console)
            page.on("response", tab.on_response)
            yield tab
            assert not tab.errors, tab.errors
        finally:
            await context.close()

    return open_tab
