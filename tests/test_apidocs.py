"""``/schema`` works offline: Swagger UI and its assets come from the service, nothing from a CDN."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Route, async_playwright

from service.app import create_app
from service.db.migrate import upgrade
from tests.conftest import make_settings
from tests.servers import bind_loopback, serve

CHROMIUM = shutil.which("chromium")


@pytest.fixture
def database_file(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'docs.db'}"
    upgrade(url)
    return url


async def test_the_schema_page_references_only_its_own_assets(database_file: str) -> None:
    with bind_loopback() as sock:
        async with serve(create_app(make_settings(database_file)), sock) as base_url, httpx.AsyncClient() as client:
            page = await client.get(f"{base_url}/schema")
            assert page.status_code == 200
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            links = re.findall(r"(?:src|href)=['\"]([^'\"]+)", page.text)
            assert len(links) == 4
            for link in links:
                assert link.startswith("/schema/assets/"), link
                asset = await client.get(f"{base_url}{link}")
                assert asset.status_code == 200, link
                assert asset.content
                assert "max-age=86400" in asset.headers["cache-control"]


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is needed (.ci/run installs it)")
async def test_swagger_ui_renders_with_the_network_cut_off(database_file: str) -> None:
    outside: list[str] = []
    with bind_loopback() as sock:
        async with serve(create_app(make_settings(database_file)), sock) as base_url, async_playwright() as playwright:

            async def only_local(route: Route) -> None:
                if route.request.url.startswith(base_url):
                    await route.continue_()
                else:
                    outside.append(route.request.url)
                    await route.abort()

            browser = await playwright.chromium.launch(executable_path=CHROMIUM)
            try:
                page = await browser.new_page()
                await page.route("**/*", only_local)
                await page.goto(f"{base_url}/schema")
                title = page.locator(".swagger-ui .info .title")
                await title.wait_for(timeout=15_000)
                assert "Switchboard" in await title.inner_text()
                assert await page.locator(".opblock").count() > 20, "the operations are listed"
            finally:
                await browser.close()
    assert outside == [], "the page reached outside the service"
