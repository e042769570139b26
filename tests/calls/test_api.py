"""The calls API with Vapi replaced at the transport level (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from service.db.engine import Database
from service.db.models import Call
from tests.harness import app_client, build_app

Handler = Callable[[httpx.Request], httpx.Response]
CALL_BODY = {"assistantId": "asst-1", "phoneNumberId": "pn-1", "customer": {"number": "+14155550123"}}


class FakeVapi:
    """Answers Vapi requests with whatever the test chose; records them."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answer: Handler = lambda request: httpx.Response(
            201,
            json={
                "id": f"vapi-{len(self.requests)}",
                "status": "queued",
                "type": "outboundPhoneCall",
                "customer": json.loads(request.content)["customer"],
            },
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.startswith(("/assistant/", "/phone-number/")):
            # Upstream resolution reads the assistant and number: these have no server of their own.
            return httpx.Response(404, json={"message": "Couldn't Find Assistant"})
        self.requests.append(request)
        return self.answer(request)


@pytest.fixture
def vapi() -> FakeVapi:
    return FakeVapi()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"public_url": "https://sb.example.com"}


async def call_count(database_url: str) -> int:
    db = Database(database_url)
    try:
        async with db.read() as session:
            return int(await session.scalar(select(func.count()).select_from(Call)) or 0)
    finally:
        await db.dispose()


async def test_place_call_stores_it_and_returns_201(client: AsyncTestClient[Any], vapi: FakeVapi) -> None:
    response = await client.post("/v1/calls", json={**CALL_BODY, "metadata": {"crmId": "42"}})
    assert response.status_code == 201, response.text
    call = response.json()
    assert call["id"] == "vapi-1"
    assert call["status"] == "queued"
    assert call["metadata"] == {"crmId": "42"}
    sent = json.loads(vapi.requests[0].content)
    assert vapi.requests[0].url.path == "/call"
    assert vapi.requests[0].headers["authorization"] == "Bearer test-vapi-private-key"
    assert sent["assistantOverrides"]["server"]["url"] == "https://sb.example.com/webhooks/vapi"
    assert (await client.get("/v1/calls/vapi-1")).json()["metadata"] == {"crmId": "42"}


@pytest.mark.parametrize(
    ("answer", "status", "slug"),
    [
        (
            lambda request: httpx.Response(400, json={"message": ["customer.number must be E.164"]}),
            502,
            "upstream-error",
        ),
        (lambda request: httpx.Response(503, text="upstream down"), 502, "upstream-error"),
        (lambda request: (_ for _ in ()).throw(httpx.ConnectError("refused")), 502, "upstream-error"),
        (lambda request: (_ for _ in ()).throw(httpx.ReadTimeout("slow")), 504, "upstream-timeout"),
    ],
)
async def test_vapi_failure_is_a_problem_and_writes_nothing(
    client: AsyncTestClient[Any], vapi: FakeVapi, database_url: str, answer: Handler, status: int, slug: str
) -> None:
    vapi.answer = answer
    response = await client.post("/v1/calls", json=CALL_BODY)
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"].endswith(slug)
    assert await call_count(database_url) == 0


@pytest.mark.parametrize(
    "body",
    [
        {**CALL_BODY, "customer": {"number": "12345"}},
        {**CALL_BODY, "assistantId": ""},
        {"phoneNumberId": "pn", "customer": {"number": "+14155550123"}},
        {**CALL_BODY, "unexpected": True},
    ],
)
async def test_bad_input_is_a_400_problem_and_vapi_is_not_called(
    client: AsyncTestClient[Any], vapi: FakeVapi, body: dict[str, Any]
) -> None:
    response = await client.post("/v1/calls", json=body)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["detail"]
    assert vapi.requests == []


async def test_requests_without_a_valid_key_are_401(client: AsyncTestClient[Any]) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        response = await client.get("/v1/calls", headers=headers)
        assert response.status_code == 401
        assert response.json()["status"] == 401


async def test_unknown_call_is_404_problem(client: AsyncTestClient[Any]) -> None:
    response = await client.get("/v1/calls/nope")
    assert response.status_code == 404
    assert response.json()["title"] == "Not found"


async def test_list_is_newest_first_with_working_cursor(client: AsyncTestClient[Any]) -> None:
    for _ in range(5):
        assert (await client.post("/v1/calls", json=CALL_BODY)).status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/calls", params=params)).json()
        seen += [call["id"] for call in page["data"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"vapi-{n}" for n in range(5, 0, -1)]
    filtered = (await client.get("/v1/calls", params={"customerNumber": "+14155550123", "status": "queued"})).json()
    assert len(filtered["data"]) == 5
    assert (await client.get("/v1/calls", params={"status": "ended"})).json()["data"] == []
    assert (await client.get("/v1/calls", params={"cursor": "garbage!"})).status_code == 400


async def test_say_to_an_ended_call_is_409(client: AsyncTestClient[Any], vapi: FakeVapi) -> None:
    vapi.answer = lambda request: httpx.Response(201, json={"id": "gone", "status": "ended"})
    await client.post("/v1/calls", json=CALL_BODY)
    response = await client.post("/v1/calls/gone/say", json={"content": "hello"})
    assert response.status_code == 409
    assert len(vapi.requests) == 1, "nothing was sent to the control URL"


async def test_unknown_route_and_method_are_problems(client: AsyncTestClient[Any]) -> None:
    missing = await client.get("/v1/nothing-here")
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    wrong = await client.delete("/v1/calls")
    assert wrong.status_code == 405
    assert wrong.headers["content-type"].startswith("application/problem+json")


async def test_oversized_body_is_413(database_url: str) -> None:
    async with app_client(build_app(database_url, max_body_bytes=1000), key=None) as client:
        response = await client.post(
            "/webhooks/vapi", content=b"{" + b" " * 5000 + b"}", headers={"X-Vapi-Secret": "test-webhook-secret"}
        )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
