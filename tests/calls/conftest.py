"""The calls API against a fake Vapi: each module provides ``vapi`` (an httpx handler) and may override
``settings_overrides``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from tests.conftest import ADMIN_KEY, make_settings


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {}


@pytest.fixture
async def client(
    database_url: str,
    vapi: Callable[[httpx.Request], Coroutine[None, None, httpx.Response]],
    settings_overrides: dict[str, Any],
) -> AsyncIterator[AsyncTestClient[Any]]:
    """The app with the admin key, its Vapi client talking to the module's ``vapi`` handler."""
    http = httpx.AsyncClient(transport=httpx.MockTransport(vapi))
    app = create_app(make_settings(database_url, **settings_overrides), http_client=http)
    async with AsyncTestClient(app) as test_client:
        test_client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        yield test_client
    await http.aclose()
