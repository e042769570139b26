"""The calls API against a fake Vapi: each module provides ``vapi`` (an httpx handler) and may override
``settings_overrides``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from tests.harness import app_client, build_app


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
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(vapi)) as http,
        app_client(build_app(database_url, http_client=http, **settings_overrides)) as test_client,
    ):
        yield test_client
