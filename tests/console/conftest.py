"""Fixtures for the console's tests: the whole stack on a fresh SQLite file, and headless Chromium.

The browser is Debian's ``chromium`` (``.ci/run`` installs it), driven through Playwright's Python API;
Playwright never downloads a browser here. Where it is missing the browser tests skip, saying so, unless
``SWITCHBOARD_TEST_REQUIRE_BROWSER=1`` (CI) makes that a failure. The tests run in the same event loop as
the servers, so only Playwright's async API may be used.

Screenshots go to a temporary folder; ``pytest --screenshots`` writes them to ``docs/screenshots/``
instead, with the simulator at real-time pace so that every figure on them agrees (at pace 4 a call's
talk time, measured by the clock, is a quarter of its recording's length, measured in audio).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, ViewportSize, async_playwright

from service.db.migrate import upgrade
from service.simulator import CallScript, Utterance
from tests.conftest import ADMIN_KEY
from tests.harness import Stack, running_stack

CHROMIUM = shutil.which("chromium")  # Debian installs it as /usr/bin/chromium
# CI sets this so that a missing browser fails the run instead of skipping the browser tests.
REQUIRE_BROWSER = os.environ.get("SWITCHBOARD_TEST_REQUIRE_BROWSER") == "1"
DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
QUICK_PACE = 4.0  # four times real time: the console tests' calls take a quarter of the time
VIEWPORT: ViewportSize = {"width": 1366, "height": 800}  # a laptop screen

# Long enough to act on a live call (about 15 s of real time at pace 4); the tests end it themselves.
LIVE_SCRIPT = CallScript(
    ring_after=0.8,
    answer_after=0.8,
    talk_seconds=60.0,
    turns=(
        Utterance("assistant", "Hi, this is Ava from Acme. How can I help?", at=0.2),
        Utterance("user", "I want to cancel my plan.", at=2.6),
    ),
)


def chromium() -> str:
    """The browser's path; skips the test where there is none (fails when CI requires it)."""
    if CHROMIUM is None:
        reason = "Debian's chromium is not installed (apt-get install chromium): browser tests not run"
        if REQUIRE_BROWSER:
            pytest.fail(f"{reason}, but SWITCHBOARD_TEST_REQUIRE_BROWSER=1 requires them")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="session")
def screenshots(request: pytest.FixtureRequest) -> Path | None:
    """``docs/screenshots/`` with ``--screenshots``, else None (screenshots go to a temporary folder)."""
    return DOCS_SCREENSHOTS if request.config.getoption("--screenshots") else None


@pytest.fixture(scope="module")
async def stack(tmp_path_factory: pytest.TempPathFactory, screenshots: Path | None) -> AsyncIterator[Stack]:
    folder = tmp_path_factory.mktemp("console")
    url = f"sqlite+aiosqlite:///{folder / 'switchboard.db'}"
    upgrade(url)
    pace = 1.0 if screenshots else QUICK_PACE
    async with running_stack(url, folder, script=LIVE_SCRIPT, pace=pace) as running:
        yield running


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = chromium()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, args=["--autoplay-policy=no-user-gesture-required"]
        )
        yield launched
        await launched.close()


@dataclass
class Console:
    """A browser tab on the console, collecting every console error and uncaught page error."""

    page: Page
    base_url: str
    screenshots: Path
    errors: list[str] = field(default_factory=list)

    async def open(self, path: str) -> None:
        await self.page.goto(self.base_url + path)

    async def sign_in(self, key: str = ADMIN_KEY) -> None:
        await self.open("/console/sign-in")
        await self.page.get_by_label("API key").fill(key)
        await self.page.get_by_role("button", name="Sign in").click()
        await self.page.wait_for_url(self.base_url + "/console/")

    async def screenshot(self, name: str, *, full_page: bool = False) -> None:
        """Take the page as ``name.png`` (in ``docs/screenshots/`` only with ``--screenshots``)."""
        self.screenshots.mkdir(parents=True, exist_ok=True)
        path = self.screenshots / f"{name}.png"
        await self.page.screenshot(path=path, full_page=full_page, animations="disabled")


@pytest.fixture
async def console(browser: Browser, stack: Stack, screenshots: Path | None, tmp_path: Path) -> AsyncIterator[Console]:
    context = await browser.new_context(viewport=VIEWPORT, locale="en-GB", timezone_id="UTC")
    context.set_default_timeout(10_000)
    page = await context.new_page()
    tab = Console(page, stack.base_url.rstrip("/"), screenshots or tmp_path / "screenshots")

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            tab.errors.append(f"{message.text} ({message.location.get('url')})")

    page.on("console", on_console)
    page.on("pageerror", lambda error: tab.errors.append(f"uncaught: {error}"))
    yield tab
    await context.close()
