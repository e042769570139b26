"""One answer for bad query parameters (400 problem documents, every filter alike), readable body errors,
and Content-Types that say their charset once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.errors import EMPTY_BODY
from tests.conftest import ADMIN_KEY, make_settings

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    async with AsyncTestClient(create_app(make_settings(database_url))) as test_client:
        test_client.headers.update(AUTH)
        yield test_client


@pytest.mark.parametrize(
    ("path", "params", "says"),
    [
        ("/v1/calls", {"status": "bogus"}, "Invalid enum value 'bogus'"),
        ("/v1/calls", {"limit": "0"}, ">= 1"),
        ("/v1/calls", {"createdAfter": "yesterday"}, "RFC3339"),
        ("/v1/calls", {"cursor": "garbage!"}, "the cursor is not valid"),
        ("/v1/recordings", {"status": "bogus"}, "Invalid enum value 'bogus'"),
        ("/v1/recordings", {"minDurationSeconds": "x"}, "float"),
        ("/v1/recordings", {"cursor": "garbage!"}, "the cursor is not valid"),
        ("/v1/webhook-endpoints", {"cursor": "garbage!"}, "the cursor is not valid"),
        ("/v1/calls/any/events", {"source": "bogus"}, "Invalid enum value 'bogus'"),
    ],
)
async def test_every_bad_filter_is_a_400_problem(
    client: AsyncTestClient[Any], path: str, params: dict[str, str], says: str
) -> None:
    response = await client.get(path, params=params)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["title"] == "Bad request"
    assert says in problem["detail"] + str(problem.get("errors", ""))


async def test_every_known_status_filters(client: AsyncTestClient[Any]) -> None:
    for status in ("scheduled", "queued", "ringing", "in-progress", "forwarding", "ended"):
        assert (await client.get("/v1/calls", params={"status": status})).status_code == 200
    for status in ("recording", "completed", "partial", "failed"):
        assert (await client.get("/v1/recordings", params={"status": status})).status_code == 200


@pytest.mark.parametrize("path", ["/v1/calls", "/v1/rules/validate"])
async def test_an_empty_body_says_so(client: AsyncTestClient[Any], path: str) -> None:
    response = await client.post(path, content=b"", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["errors"] == [{"message": EMPTY_BODY, "key": "data", "source": "body"}]
    assert "'data'" not in response.text


async def test_content_types_name_their_charset_once(client: AsyncTestClient[Any]) -> None:
    console = await client.get("/console/sign-in")
    assert console.headers["content-type"] == "text/html; charset=utf-8"
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"] == "text/plain; version=1.0.0; charset=utf-8"
