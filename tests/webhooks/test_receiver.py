"""The webhook receiver against a real database, through Litestar's test client."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import func, select

from service.db.engine import Database
from service.db.models import Call, CallEvent
from tests.conftest import WEBHOOK_SECRET
from tests.harness import app_client, build_app


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    async with app_client(build_app(database_url)) as test_client:
        yield test_client


_clock = itertools.count(1764150000000)


def message(kind: str, call_id: str = "call-1", **fields: Any) -> dict[str, Any]:
    """A server message; each has its own timestamp, as Vapi's do (duplicates are byte-identical)."""
    return {
        "message": {
            "type": kind,
            "timestamp": next(_clock),
            "call": {"id": call_id, "type": "inboundPhoneCall", "customer": {"number": "+14155550100"}},
            **fields,
        }
    }


async def post(client: AsyncTestClient[Any], body: Any, secret: str | None = WEBHOOK_SECRET) -> httpx.Response:
    headers = {"X-Vapi-Secret": secret} if secret is not None else {}
    content = body if isinstance(body, bytes) else msgspec.json.encode(body)
    return await client.post("/webhooks/vapi", content=content, headers={**headers, "Content-Type": "application/json"})


async def count(database_url: str, model: type[Any]) -> int:
    db = Database(database_url)
    try:
        async with db.read() as session:
            return int(await session.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        await db.dispose()


async def test_first_webhook_creates_the_call_and_stores_the_event(
    client: AsyncTestClient[Any],
) -> None:
    response = await post(client, message("status-update", status="ringing"))
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": True, "seq": 1, "duplicate": False}
    call = (await client.get("/v1/calls/call-1")).json()
    assert call["status"] == "ringing"
    assert call["type"] == "inboundPhoneCall"
    assert call["customer"] == {"number": "+14155550100"}
    events = (await client.get("/v1/calls/call-1/events")).json()["data"]
    assert [(e["seq"], e["source"], e["type"]) for e in events] == [
        (1, "vapi", "status-update"),
        (2, "switchboard", "call.status_changed"),
    ]
    assert events[1]["payload"] == {"from": "queued", "to": "ringing"}


@pytest.mark.parametrize("secret", [None, "wrong-secret", WEBHOOK_SECRET + "x"])
async def test_wrong_or_missing_secret_is_refused_and_changes_nothing(
    client: AsyncTestClient[Any], database_url: str, secret: str | None
) -> None:
    response = await post(client, message("status-update", status="ringing"), secret=secret)
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["status"] == 401
    assert await count(database_url, Call) == 0
    assert await count(database_url, CallEvent) == 0


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b"{not json", "not valid JSON"),
        (b"[]", '"message" object'),
        (b'{"message": {"call": {"id": "x"}}}', '"message.type"'),
        (b'{"message": {"type": "status-update", "call": {"id": 7}}}', '"message.call"'),
    ],
)
async def test_malformed_webhooks_get_a_problem_document(
    client: AsyncTestClient[Any], database_url: str, body: bytes, detail: str
) -> None:
    await post(client, message("status-update", status="in-progress"))
    response = await post(client, body)
    assert response.status_code == 400
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    assert problem["title"] == "Malformed webhook"
    assert detail in problem["detail"]
    assert "Traceback" not in response.text
    assert await count(database_url, CallEvent) == 2, "what was stored before is kept"


async def test_status_never_goes_back_from_ended(client: AsyncTestClient[Any]) -> None:
    await post(client, message("status-update", status="in-progress"))
    await post(client, message("status-update", status="ended", endedReason="customer-ended-call"))
    response = await post(client, message("status-update", status="in-progress"))
    assert response.status_code == 200
    call = (await client.get("/v1/calls/call-1")).json()
    assert call["status"] == "ended"
    assert call["endedReason"] == "customer-ended-call"
    events = (await client.get("/v1/calls/call-1/events", params={"type": "status-update"})).json()["data"]
    assert len(events) == 3, "the late update is still stored in the timeline"


async def test_unknown_message_types_are_stored(client: AsyncTestClient[Any]) -> None:
    response = await post(client, message("brand-new-thing", detail={"x": 1}))
    assert response.status_code == 200
    events = (await client.get("/v1/calls/call-1/events")).json()["data"]
    assert events[0]["type"] == "brand-new-thing"
    assert events[0]["payload"]["detail"] == {"x": 1}


async def test_end_of_call_report_ends_the_call(client: AsyncTestClient[Any]) -> None:
    await post(client, message("status-update", status="in-progress"))
    await post(
        client,
        message(
            "end-of-call-report",
            endedReason="assistant-ended-call",
            startedAt="2026-11-26T10:00:00.000Z",
            endedAt="2026-11-26T10:01:30.000Z",
        ),
    )
    call = (await client.get("/v1/calls/call-1")).json()
    assert call["status"] == "ended"
    assert call["endedReason"] == "assistant-ended-call"
    assert call["endedAt"].startswith("2026-11-26T10:01:30")


async def test_monitor_urls_are_not_stored_in_event_payloads(client: AsyncTestClient[Any]) -> None:
    body = message("status-update", status="ringing")
    body["message"]["call"]["monitor"] = {"listenUrl": "ws://127.0.0.1:9/l", "controlUrl": "http://127.0.0.1:9/c"}
    body["message"]["call"]["status"] = "ended"  # no listen session for this test
    await post(client, body)
    call = (await client.get("/v1/calls/call-1")).json()
    assert call["monitor"]["controlUrl"] == "http://127.0.0.1:9/c"
    events = (await client.get("/v1/calls/call-1/events")).json()["data"]
    assert "127.0.0.1:9" not in str(events)


async def test_events_pagination_and_filters(client: AsyncTestClient[Any]) -> None:
    for _ in range(5):
        await post(client, message("speech-update", status="started", role="user"))
    first = (await client.get("/v1/calls/call-1/events", params={"limit": 2})).json()
    assert [e["seq"] for e in first["data"]] == [1, 2]
    second = (await client.get("/v1/calls/call-1/events", params={"limit": 2, "cursor": first["nextCursor"]})).json()
    assert [e["seq"] for e in second["data"]] == [3, 4]
    after = (await client.get("/v1/calls/call-1/events", params={"afterSeq": 4})).json()
    assert [e["seq"] for e in after["data"]] == [5]
    assert after["nextCursor"] is None
    none = (await client.get("/v1/calls/call-1/events", params={"source": "listen"})).json()
    assert none["data"] == []


async def test_duplicate_deliveries_are_stored_once(client: AsyncTestClient[Any]) -> None:
    body = msgspec.json.encode(message("status-update", status="ringing"))
    first = await post(client, body)
    again = await post(client, body)
    assert first.json() == {"stored": True, "seq": 1, "duplicate": False}
    assert again.json() == {"stored": False, "seq": 1, "duplicate": True}
    events = (await client.get("/v1/calls/call-1/events", params={"source": "vapi"})).json()["data"]
    assert len(events) == 1


async def test_a_call_without_audio_has_recording_status_none(client: AsyncTestClient[Any]) -> None:
    await post(client, message("status-update", status="ringing"))
    recording = await client.get("/v1/calls/call-1/recording")
    assert recording.status_code == 200
    assert recording.json()["status"] == "none"
    assert recording.json()["bytes"] == 0
    download = await client.get("/v1/calls/call-1/recording.wav")
    assert download.status_code == 404
    assert download.json()["recordingStatus"] == "none"
    assert (await client.get("/v1/calls/nope/recording")).status_code == 404
