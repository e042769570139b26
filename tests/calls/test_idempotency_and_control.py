"""Idempotency-Key, control messages, importing calls and metadata filters (Vapi faked at the transport)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient

from tests.conftest import ADMIN_KEY, WEBHOOK_SECRET
from tests.harness import app_client, build_app, served_app

CALL_BODY = {"assistantId": "asst-1", "phoneNumberId": "pn-1", "customer": {"number": "+14155550123"}}
CONTROL_URL = "http://vapi.test/call-x/control"


class SlowVapi:
    """Creates calls after a delay; records every request (the REST API and control POSTs)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.delay = 0.0
        self.create_status = 201
        self.control_status = 200

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.startswith(("/assistant/", "/phone-number/")):
            return httpx.Response(404, json={"message": "Couldn't Find Assistant"})  # no server of their own
        self.requests.append(request)
        await asyncio.sleep(self.delay)
        if request.url.path.endswith("/control"):
            return httpx.Response(self.control_status, json={"ok": True})
        if request.method == "GET":
            call_id = request.url.path.rsplit("/", 1)[-1]
            if call_id == "missing":
                return httpx.Response(404, json={"message": "Not Found"})
            return httpx.Response(200, json=self.call(call_id, "in-progress"))
        if self.create_status >= 400:
            return httpx.Response(self.create_status, json={"message": "nope"})
        body = json.loads(request.content)
        return httpx.Response(
            201, json={**self.call(f"call-{len(self.creates)}", "queued"), "customer": body["customer"]}
        )

    @property
    def creates(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.method == "POST" and r.url.path == "/call"]

    @property
    def controls(self) -> list[dict[str, Any]]:
        return [json.loads(r.content) for r in self.requests if r.url.path.endswith("/control")]

    def call(self, call_id: str, status: str) -> dict[str, Any]:
        # No listen URL: these tests are about the API, not recording.
        return {"id": call_id, "status": status, "type": "outboundPhoneCall", "monitor": {"controlUrl": CONTROL_URL}}


@pytest.fixture
def vapi() -> SlowVapi:
    return SlowVapi()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    # The fake Vapi's control URLs are on a host that does not resolve: trusted as Vapi's API host.
    return {"vapi_base_url": "http://vapi.test"}


async def test_same_key_same_body_replays_without_a_second_vapi_call(
    client: AsyncTestClient[Any], vapi: SlowVapi
) -> None:
    headers = {"Idempotency-Key": "order-1"}
    first = await client.post("/v1/calls", json=CALL_BODY, headers=headers)
    again = await client.post("/v1/calls", json=CALL_BODY, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert len(vapi.creates) == 1
    other_body = await client.post("/v1/calls", json={**CALL_BODY, "metadata": {"x": 1}}, headers=headers)
    assert other_body.status_code == 422
    assert "different request body" in other_body.json()["detail"]
    assert len(vapi.creates) == 1


async def test_concurrent_duplicates_reach_vapi_once(database_url: str, vapi: SlowVapi) -> None:
    vapi.delay = 0.5
    headers = {"Idempotency-Key": "order-2", "Authorization": f"Bearer {ADMIN_KEY}"}
    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(vapi)) as http,
        served_app(database_url, http_client=http) as served,
        httpx.AsyncClient(base_url=served.base_url, headers=headers) as client,
    ):
        first, second = await asyncio.gather(
            client.post("/v1/calls", json=CALL_BODY), client.post("/v1/calls", json=CALL_BODY)
        )
        assert sorted([first.status_code, second.status_code]) == [201, 409]
        assert len(vapi.creates) == 1
        replay = await client.post("/v1/calls", json=CALL_BODY)
        assert replay.status_code == 201
        assert replay.json() == (first if first.status_code == 201 else second).json()
        assert len(vapi.creates) == 1


async def test_errors_are_replayed_too(client: AsyncTestClient[Any], vapi: SlowVapi) -> None:
    vapi.create_status = 500
    headers = {"Idempotency-Key": "order-3"}
    first = await client.post("/v1/calls", json=CALL_BODY, headers=headers)
    vapi.create_status = 201
    again = await client.post("/v1/calls", json=CALL_BODY, headers=headers)
    assert first.status_code == again.status_code == 502
    assert again.json() == first.json()
    assert again.headers["content-type"].startswith("application/problem+json")
    assert len(vapi.creates) == 1


async def test_without_a_key_every_request_is_new(client: AsyncTestClient[Any], vapi: SlowVapi) -> None:
    await client.post("/v1/calls", json=CALL_BODY)
    await client.post("/v1/calls", json=CALL_BODY)
    assert len(vapi.creates) == 2


@pytest.mark.parametrize("body", [{"content": "  "}, {"content": "x" * 5001}, {"content": "hi", "type": "say"}])
async def test_a_say_that_vapi_would_not_take_is_400_and_not_sent(
    client: AsyncTestClient[Any], vapi: SlowVapi, body: dict[str, Any]
) -> None:
    await client.post("/v1/calls/import", json={"vapiCallId": "call-x"})
    response = await client.post("/v1/calls/call-x/say", json=body)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert vapi.controls == []
    assert (await client.get("/v1/calls/call-x/events", params={"type": "injection.sent"})).json()["data"] == []


async def test_say_is_idempotent(client: AsyncTestClient[Any], vapi: SlowVapi) -> None:
    await client.post("/v1/calls/import", json={"vapiCallId": "call-x"})
    headers = {"Idempotency-Key": "say-1"}
    first = await client.post("/v1/calls/call-x/say", json={"content": "hi"}, headers=headers)
    again = await client.post("/v1/calls/call-x/say", json={"content": "hi"}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert vapi.controls == [
        {
            "type": "say",
            "content": "hi",
            "endCallAfterSpoken": False,
            "interruptAssistantEnabled": False,
            "interruptionsEnabled": True,
        }
    ]


@pytest.mark.parametrize(
    "message",
    [
        {"type": "add-message", "message": {"role": "system", "content": "Be brief."}},
        {"type": "control", "control": "mute-assistant"},
        {"type": "end-call"},
        {"type": "transfer", "destination": {"type": "number", "number": "+14155550999"}, "content": "One moment."},
        {"type": "transfer", "destination": {"type": "sip", "sipUri": "sip:agent@example.com"}},
        {"type": "append-context", "kind": "instructions", "content": "The customer is a VIP."},
    ],
)
async def test_every_control_type_is_forwarded_and_journalled(
    client: AsyncTestClient[Any], vapi: SlowVapi, message: dict[str, Any]
) -> None:
    await client.post("/v1/calls/import", json={"vapiCallId": "call-x"})
    response = await client.post("/v1/calls/call-x/control", json=message)
    assert response.status_code == 202, response.text
    assert response.json()["type"] == message["type"]
    assert response.json()["status"] == "sent"
    sent = vapi.controls[-1]
    assert sent["type"] == message["type"]
    events = (await client.get("/v1/calls/call-x/events", params={"type": "injection.sent"})).json()["data"]
    assert events[-1]["payload"]["message"] == sent


@pytest.mark.parametrize(
    "message",
    [
        {"type": "teleport"},
        {"type": "control", "control": "explode"},
        {"type": "transfer", "destination": {"type": "number", "number": "555"}},
        {"type": "add-message", "message": {"role": "robot", "content": "x"}},
        {"type": "add-message", "message": {"role": "user", "content": "   "}},
        {"type": "transfer", "destination": {"type": "number", "number": "+14155550999"}, "content": ""},
        {"type": "say", "content": "say has its own route"},
        {"type": "end-call", "extra": 1},
    ],
)
async def test_invalid_control_messages_are_400_and_not_sent(
    client: AsyncTestClient[Any], vapi: SlowVapi, message: dict[str, Any]
) -> None:
    await client.post("/v1/calls/import", json={"vapiCallId": "call-x"})
    response = await client.post("/v1/calls/call-x/control", json=message)
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/problem+json")
    assert vapi.controls == []


async def test_a_failed_control_post_is_journalled(client: AsyncTestClient[Any], vapi: SlowVapi) -> None:
    await client.post("/v1/calls/import", json={"vapiCallId": "call-x"})
    vapi.control_status = 500
    response = await client.post("/v1/calls/call-x/control", json={"type": "end-call"})
    assert response.status_code == 202
    assert response.json()["status"] == "failed"
    assert "500" in response.json()["error"]
    events = (await client.get("/v1/calls/call-x/events", params={"type": "injection.failed"})).json()["data"]
    assert len(events) == 1


async def test_import_tracks_a_call_and_unknown_ids_are_404(client: AsyncTestClient[Any]) -> None:
    imported = await client.post("/v1/calls/import", json={"vapiCallId": "call-x"})
    assert imported.status_code == 201
    assert imported.json()["status"] == "in-progress"
    types = [e["type"] for e in (await client.get("/v1/calls/call-x/events")).json()["data"]]
    assert types == ["call.imported"]
    missing = await client.post("/v1/calls/import", json={"vapiCallId": "missing"})
    assert missing.status_code == 404


async def test_metadata_filters(client: AsyncTestClient[Any], vapi: SlowVapi) -> None:
    for crm_id, region in (("1", "CA"), ("2", "NY"), ("3", "CA")):
        body = {**CALL_BODY, "metadata": {"crmId": crm_id, "region": region}}
        assert (await client.post("/v1/calls", json=body)).status_code == 201
    page = (await client.get("/v1/calls", params={"metadata.region": "CA"})).json()["data"]
    assert sorted(call["metadata"]["crmId"] for call in page) == ["1", "3"]
    page = (await client.get("/v1/calls", params={"metadata.region": "CA", "metadata.crmId": "3"})).json()["data"]
    assert [call["metadata"]["crmId"] for call in page] == ["3"]
    assert (await client.get("/v1/calls", params={"metadata.region": "TX"})).json()["data"] == []
    typed = {**CALL_BODY, "metadata": {"tier": 3, "vip": True}}
    assert (await client.post("/v1/calls", json=typed)).status_code == 201
    assert len((await client.get("/v1/calls", params={"metadata.tier": "3"})).json()["data"]) == 1
    assert len((await client.get("/v1/calls", params={"metadata.vip": "true"})).json()["data"]) == 1
    assert (await client.get("/v1/calls", params={"metadata.tier": "4"})).json()["data"] == []
    bad_key = await client.get("/v1/calls", params={'metadata.a"b': "x"})
    assert bad_key.status_code == 422


async def test_pagination_sees_every_call_once_while_calls_are_inserted(client: AsyncTestClient[Any]) -> None:
    webhook = {"X-Vapi-Secret": WEBHOOK_SECRET}

    async def add(call_id: str) -> None:
        message = {"message": {"type": "status-update", "status": "ringing", "call": {"id": call_id}}}
        assert (await client.post("/webhooks/vapi", json=message, headers=webhook)).status_code == 200

    for index in range(30):
        await add(f"old-{index:02d}")

    async def insert_more() -> None:
        for index in range(30):
            await add(f"new-{index:02d}")
            await asyncio.sleep(0)

    async def paginate() -> list[str]:
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 4, **({"cursor": cursor} if cursor else {})}
            page = (await client.get("/v1/calls", params=params)).json()
            seen += [call["id"] for call in page["data"]]
            if not (cursor := page["nextCursor"]):
                return seen

    _, seen = await asyncio.gather(insert_more(), paginate())
    assert len(seen) == len(set(seen)), "no call twice"
    assert {f"old-{index:02d}" for index in range(30)} <= set(seen), "every call that existed is seen"


@pytest.mark.parametrize("vapi_call_id", ["", "a/b", "x" * 65, "bad\u0000id", "caf\u00e9"])
async def test_import_refuses_ids_that_are_not_vapi_ids(
    client: AsyncTestClient[Any], vapi: SlowVapi, vapi_call_id: str
) -> None:
    response = await client.post("/v1/calls/import", json={"vapiCallId": vapi_call_id})
    assert response.status_code == 400
    assert vapi.requests == []


async def test_expired_idempotency_keys_are_purged_at_start_up(database_url: str) -> None:
    import datetime as dt

    from sqlalchemy import func, select

    from service.db.engine import Database
    from service.db.models import IdempotencyRecord, utcnow

    db = Database(database_url)
    async with db.write() as session:
        for key, expires in (("old", utcnow() - dt.timedelta(hours=1)), ("fresh", utcnow() + dt.timedelta(hours=1))):
            session.add(
                IdempotencyRecord(
                    principal="p", route="POST /v1/calls", key=key, request_hash="h", status="done", expires_at=expires
                )
            )
    async with app_client(build_app(database_url)):
        pass  # start-up purges
    async with db.read() as session:
        keys = (await session.scalars(select(IdempotencyRecord.key))).all()
        assert list(keys) == ["fresh"]
        assert await session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 1
    await db.dispose()
