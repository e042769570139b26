"""The webhook-endpoints API, and the issue's acceptance check end to end through the app."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from standardwebhooks import Webhook

from service.apikeys.service import ApiKeyService
from service.db.engine import Database
from service.deliveries.outbox import enqueue
from service.deliveries.service import generate_secret
from tests.conftest import ADMIN_KEY
from tests.deliveries.conftest import Receiver
from tests.harness import app_client, build_app, eventually

PROBLEM = "application/problem+json"


def endpoints_app(database_url: str, **overrides: Any) -> Litestar:
    """The app with loopback receivers allowed and a quick retry."""
    return build_app(database_url, **{"webhook_allow_private": True, "webhook_retry_delays": (0.05,), **overrides})


@pytest.fixture
def app(database_url: str) -> Litestar:
    return endpoints_app(database_url)


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Any]]:
    async with app_client(app) as test_client:
        yield test_client


async def create_endpoint(client: AsyncTestClient[Any], **body: Any) -> dict[str, Any]:
    response = await client.post("/v1/webhook-endpoints", json={"events": ["call.created"], **body})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_fails_twice_then_succeeds_arrives_once_signed_with_three_attempts_logged(
    client: AsyncTestClient[Any], db: Database, receiver: Receiver, receiver_url: str
) -> None:
    """The issue's done-when: fails twice, then succeeds; received once; valid signature; three attempts."""
    endpoint = await create_endpoint(client, url=receiver_url, events=["call.created", "call.ended"])
    receiver.answer(500, 503)
    # The caller's transaction, as the emit points will do it (the test client runs the app on
    # another event loop, hence a Database of the test's own; the commit still wakes the worker).
    async with db.write() as session:
        assert await enqueue(session, "call.created", {"callId": "call-1", "status": "queued"}) == 1

    await receiver.wait_for(3)
    # What a receiver that deduplicates by webhook-id sees: one event, delivered three times.
    [(message_id, posts)] = receiver.by_message.items()
    assert len(posts) == 3
    hook = Webhook(endpoint["secret"])
    for post in posts:
        payload = hook.verify(post.body, post.headers)
        assert payload["type"] == "call.created"
        assert payload["data"] == {"callId": "call-1", "status": "queued"}

    async def logged() -> dict[str, Any]:
        response = await client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries")
        assert response.status_code == 200, response.text
        page: dict[str, Any] = response.json()
        return page

    async def settled() -> dict[str, Any] | None:
        page = await logged()
        return page if page["data"][0]["status"] != "pending" else None

    page = await eventually(settled, what="the delivery is settled")
    [delivery] = page["data"]
    assert delivery["status"] == "delivered"
    assert delivery["messageId"] == message_id
    assert delivery["attemptCount"] == 3
    assert [attempt["statusCode"] for attempt in delivery["attempts"]] == [500, 503, 200]
    assert delivery["attempts"][0]["error"].startswith("HTTP 500")
    assert delivery["attempts"][2]["error"] is None
    assert delivery["nextAttemptAt"] is None
    assert delivery["deliveredAt"] is not None
    assert page["nextCursor"] is None


async def test_the_secret_is_shown_once(client: AsyncTestClient[Any]) -> None:
    created = await create_endpoint(client, url="http://127.0.0.1:9/hooks")
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 24
    listing = await client.get("/v1/webhook-endpoints")
    assert listing.status_code == 200
    [listed] = listing.json()["data"]
    assert listed["id"] == created["id"]
    assert "secret" not in listed
    assert secret not in listing.text
    assert listed["enabled"] is True
    assert listed["disabledReason"] is None

    chosen = generate_secret()
    assert (await create_endpoint(client, url="http://127.0.0.1:9/other", secret=chosen))["secret"] == chosen


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"url": "http://127.0.0.1:9/h", "events": []}, 400, "events"),
        ({"url": "http://127.0.0.1:9/h", "events": ["call.exploded"]}, 400, "events"),
        ({"events": ["call.created"]}, 400, "url"),
        ({"url": "http://127.0.0.1:9/h", "events": ["call.created"], "extra": 1}, 400, "extra"),
        ({"url": "http://127.0.0.1:9/h", "events": ["call.created"], "secret": "hunter2"}, 400, "secret"),
        ({"url": "http://127.0.0.1:9/h", "events": ["call.created"], "secret": "whsec_c2hvcnQ="}, 422, "24 to 64"),
        ({"url": "ftp://example.com/h", "events": ["call.created"]}, 422, "http://"),
    ],
)
async def test_invalid_bodies_are_problem_documents(
    client: AsyncTestClient[Any], body: dict[str, Any], status: int, needle: str
) -> None:
    response = await client.post("/v1/webhook-endpoints", json=body)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    problem = response.json()
    assert problem["status"] == status
    assert needle in problem["detail"] + str(problem.get("errors", ""))


PRIVATE_URLS = [
    ("http://127.0.0.1:8080/hooks", "loopback"),
    ("http://localhost/hooks", "loopback"),
    ("http://[::1]/hooks", "loopback"),
    ("http://10.0.0.5/hooks", "private"),
    ("http://192.168.1.10/hooks", "private"),
    ("http://[fd00::5]/hooks", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://0.0.0.0/hooks", "unspecified"),
]


async def test_private_urls_are_refused_unless_allowed(database_url: str) -> None:
    async with app_client(endpoints_app(database_url, webhook_allow_private=False), key=None) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        for url, reason in PRIVATE_URLS:
            response = await client.post("/v1/webhook-endpoints", json={"url": url, "events": ["call.created"]})
            assert response.status_code == 422, response.text
            assert response.headers["content-type"].startswith(PROBLEM)
            problem = response.json()
            assert problem["field"] == "url"
            assert reason in problem["detail"], url
            assert "SWITCHBOARD_WEBHOOK_ALLOW_PRIVATE" in problem["detail"]
        public = await client.post(
            "/v1/webhook-endpoints", json={"url": "https://93.184.216.34/hooks", "events": ["call.created"]}
        )
        assert public.status_code == 201, public.text

    async with app_client(endpoints_app(database_url, webhook_allow_private=True), key=None) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        for url, _ in PRIVATE_URLS:
            response = await client.post("/v1/webhook-endpoints", json={"url": url, "events": ["call.created"]})
            assert response.status_code == 201, response.text


async def test_delete_and_unknown_ids(client: AsyncTestClient[Any]) -> None:
    created = await create_endpoint(client, url="http://127.0.0.1:9/hooks")
    assert (await client.delete(f"/v1/webhook-endpoints/{created['id']}")).status_code == 204
    assert (await client.get("/v1/webhook-endpoints")).json()["data"] == []
    for response in (
        await client.delete(f"/v1/webhook-endpoints/{created['id']}"),
        await client.get(f"/v1/webhook-endpoints/{uuid.uuid4()}/deliveries"),
        await client.get("/v1/webhook-endpoints/not-a-uuid/deliveries"),
    ):
        assert response.status_code == 404, response.text
        assert response.headers["content-type"].startswith(PROBLEM)


async def test_listing_is_paginated_newest_first(client: AsyncTestClient[Any]) -> None:
    ids = [(await create_endpoint(client, url=f"http://127.0.0.1:9/h{index}"))["id"] for index in range(3)]
    first = (await client.get("/v1/webhook-endpoints", params={"limit": 2})).json()
    assert [endpoint["id"] for endpoint in first["data"]] == ids[::-1][:2]
    assert first["nextCursor"]
    second = (await client.get("/v1/webhook-endpoints", params={"limit": 2, "cursor": first["nextCursor"]})).json()
    assert [endpoint["id"] for endpoint in second["data"]] == ids[:1]
    assert second["nextCursor"] is None
    bad = await client.get("/v1/webhook-endpoints", params={"cursor": "garbage"})
    assert bad.status_code == 400  # a query parameter, like every bad filter


async def test_every_route_needs_the_webhooks_scope(client: AsyncTestClient[Any], db: Database) -> None:
    keys = ApiKeyService(db, admin_key=None)
    _, calls_only = await keys.create("calls", ["calls:read", "calls:write"])
    _, hooks = await keys.create("hooks", ["webhooks:write"])
    endpoint_id = uuid.uuid4()
    routes = [
        ("POST", "/v1/webhook-endpoints"),
        ("GET", "/v1/webhook-endpoints"),
        ("DELETE", f"/v1/webhook-endpoints/{endpoint_id}"),
        ("GET", f"/v1/webhook-endpoints/{endpoint_id}/deliveries"),
    ]
    body = {"url": "http://127.0.0.1:9/h", "events": ["call.created"]}
    for method, path in routes:
        json_body = body if method == "POST" else None
        anonymous = await client.request(method, path, json=json_body, headers={"Authorization": ""})
        assert anonymous.status_code == 401
        denied = await client.request(method, path, json=json_body, headers={"Authorization": f"Bearer {calls_only}"})
        assert denied.status_code == 403
        allowed = await client.request(method, path, json=json_body, headers={"Authorization": f"Bearer {hooks}"})
        assert allowed.status_code in (200, 201, 404), allowed.text
