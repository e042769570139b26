"""The helpers every test leans on: ``eventually`` and the app under test."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest

from tests.harness import app_client, build_app, eventually, served_app


async def test_eventually_returns_the_first_truthy_value_of_plain_and_async_predicates() -> None:
    counter = itertools.count()
    assert await eventually(lambda: next(counter) >= 3) is True

    async def third() -> str | None:
        return "ready" if next(counter) >= 6 else None

    assert await eventually(third) == "ready"


async def test_eventually_fails_with_what_it_waited_for() -> None:
    with pytest.raises(AssertionError, match=r"still not true after 0.1 s: the moon is cheese"):
        await eventually(lambda: False, 0.1, what="the moon is cheese")


async def test_eventually_gives_up_on_a_predicate_that_hangs() -> None:
    async def hangs() -> bool:
        await asyncio.sleep(60)
        return True

    with pytest.raises(AssertionError, match="hangs"):
        await eventually(hangs, 0.1)


async def test_the_app_under_test_in_process_and_served(database_url: str) -> None:
    async with app_client(build_app(database_url)) as client:
        assert (await client.get("/v1/calls")).status_code == 200, "signed in with the admin key"
    async with app_client(build_app(database_url), key=None) as client:
        assert (await client.get("/v1/calls")).status_code == 401
    async with served_app(database_url) as served, httpx.AsyncClient(base_url=served.base_url) as client:
        assert (await client.get("/healthz")).status_code == 200
        assert served.app.state.api_keys is not None
