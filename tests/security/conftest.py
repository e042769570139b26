"""Switchboard alone on a loopback socket, for probing it as a client would (no simulator needed)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from service.app import create_app
from tests.conftest import ADMIN_KEY, make_settings
from tests.servers import bind_loopback, serve, url_of


@pytest.fixture
async def api(database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An admin client of Switchboard served by uvicorn on loopback, recordings under ``tmp_path``."""
    sock = bind_loopback()
    app = create_app(
        make_settings(database_url, storage_url=f"file://{tmp_path / 'recordings'}", public_url=url_of(sock))
    )
    async with (
        serve(app, sock) as base_url,
        httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client,
    ):
        yield client
