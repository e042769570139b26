"""Outbound-webhook fixtures: a scriptable receiver on a real loopback socket, endpoint factories."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select

from service.db.engine import Database
from service.db.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint
from service.deliveries.service import generate_secret
from tests.harness import eventually
from tests.servers import serve

ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()


@dataclass
class Receiver:
    """A webhook receiver: answers each POST with the next scripted ``(status, headers)`` (200 once the
    script runs out) and records what arrived."""

    script: deque[tuple[int, dict[str, str]]] = field(default_factory=deque)
    delay: float = 0.0
    requests: list[Received] = field(default_factory=list)

    def answer(self, *responses: int | tuple[int, dict[str, str]]) -> None:
        for response in responses:
            self.script.append(response if isinstance(response, tuple) else (response, {}))

    @property
    def by_message(self) -> dict[str, list[Received]]:
        """What a deduplicating receiver sees: one logical event per ``webhook-id``."""
        seen: dict[str, list[Received]] = {}
        for request in self.requests:
            seen.setdefault(request.headers["webhook-id"], []).append(request)
        return seen

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        await eventually(lambda: len(self.requests) >= count, timeout, what=f"{count} requests arrived")

    async def __call__(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {key.decode().lower(): value.decode() for key, value in scope["headers"]}
        self.requests.append(Received(headers, body, time.monotonic()))
        if self.delay:
            await asyncio.sleep(self.delay)
        status, extra = self.script.popleft() if self.script else (200, {})
        response_headers = [(b"content-type", b"text/plain")]
        response_headers += [(key.encode(), value.encode()) for key, value in extra.items()]
        await send({"type": "http.response.start", "status": status, "headers": response_headers})
        await send({"type": "http.response.body", "body": b"ok" if status < 300 else b"not now"})


@pytest.fixture
def receiver() -> Receiver:
    return Receiver()


@pytest.fixture
async def receiver_url(receiver: Receiver) -> AsyncIterator[str]:
    async with serve(receiver) as url:
        yield url + "/hooks"


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


async def add_endpoint(
    db: Database, url: str, events: list[str] | None = None, *, secret: str | None = None
) -> WebhookEndpoint:
    endpoint = WebhookEndpoint(
        url=url, events=events or ["call.created"], secret=secret or generate_secret(), enabled=True
    )
    async with db.write() as session:
        session.add(endpoint)
    return endpoint


async def deliveries_of(db: Database) -> list[WebhookDelivery]:
    async with db.read() as session:
        return list((await session.scalars(select(WebhookDelivery).order_by(WebhookDelivery.created_at))).all())


async def attempts_of(db: Database, delivery_id: Any) -> list[WebhookDeliveryAttempt]:
    async with db.read() as session:
        rows = await session.scalars(
            select(WebhookDeliveryAttempt)
            .where(WebhookDeliveryAttempt.delivery_id == delivery_id)
            .order_by(WebhookDeliveryAttempt.attempted_at)
        )
        return list(rows.all())
