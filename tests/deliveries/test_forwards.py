"""The tap's forward queue: the worker against a real database and a real loopback upstream."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, cast

import httpx
import msgspec
from sqlalchemy import Table, insert, select

from service.calls.upstream import request_headers
from service.db.engine import Database
from service.db.models import Call, UpstreamForward, utcnow
from service.deliveries.forwards import ForwardWorker, enqueue_forward
from service.deliveries.retry import RetryPolicy
from tests.deliveries.conftest import Receiver
from tests.harness import eventually


async def add_calls(db: Database, upstream: dict[str, Any], *call_ids: str) -> None:
    now = utcnow()
    rows = [
        {
            "id": call_id,
            "status": "in-progress",
            "origin": "webhook",
            "customer": {},
            "metadata": {},
            "listen_auth": False,
            "control_auth": False,
            "last_event_seq": 0,
            "upstream": upstream,
            "created_at": now,
            "updated_at": now,
        }
        for call_id in call_ids
    ]
    async with db.write() as session:
        await session.execute(insert(cast(Table, Call.__table__)), rows)


def body(call_id: str, n: int) -> bytes:
    return msgspec.json.encode({"message": {"type": "status-update", "call": {"id": call_id}, "n": n}})


async def queue(db: Database, *call_ids: str, count: int = 3) -> None:
    async with db.write() as session:
        for n in range(count):
            for call_id in call_ids:
                enqueue_forward(
                    session, call_id=call_id, seq=n + 1, message_type="status-update", body=body(call_id, n)
                )


async def forwards(db: Database) -> list[UpstreamForward]:
    async with db.read() as session:
        return list((await session.scalars(select(UpstreamForward).order_by(UpstreamForward.id))).all())


@asynccontextmanager
async def worker(db: Database, policy: RetryPolicy, *, timeout: float = 5) -> AsyncIterator[ForwardWorker]:
    async with httpx.AsyncClient() as http:
        forwarder = ForwardWorker(
            db,
            http,
            headers_of=request_headers,
            default_upstream=None,
            policy=policy,
            timeout=timeout,
            poll_interval=0.1,
        )
        await forwarder.start()
        forwarder.wake()
        try:
            yield forwarder
        finally:
            await forwarder.close(5)


def sent(receiver: Receiver) -> list[tuple[str, int]]:
    decoded = [msgspec.json.decode(request.body)["message"] for request in receiver.requests]
    return [(message["call"]["id"], message["n"]) for message in decoded]


async def test_forwards_go_in_order_per_call_and_a_failure_holds_only_its_call(
    db: Database, receiver: Receiver, receiver_url: str
) -> None:
    await add_calls(db, {"url": receiver_url, "headers": {"X-Crm": "k"}, "source": "call"}, "call-a", "call-b")
    await queue(db, "call-a", "call-b")
    receiver.answer(503)  # the first attempt, call-a's first message, fails

    async with worker(db, RetryPolicy((0.3,), dt.timedelta(minutes=5))):
        await eventually(lambda: _all(db, "delivered"), what="every forward delivered")

    order = sent(receiver)
    assert [n for call, n in order if call == "call-a"] == [0, 0, 1, 2], "retried, then the rest in order"
    assert [n for call, n in order if call == "call-b"] == [0, 1, 2]
    assert order.index(("call-b", 2)) < order.index(("call-a", 1)), "call-b did not wait for call-a"
    assert all(request.headers["x-crm"] == "k" for request in receiver.requests)
    assert not any("webhook-signature" in request.headers for request in receiver.requests), "no Standard Webhooks"
    assert receiver.requests[0].body == body("call-a", 0), "the raw body as queued"
    stored = await forwards(db)
    assert [(f.attempts, f.last_status_code) for f in stored if f.call_id == "call-a"] == [(2, 200), (1, 200), (1, 200)]


async def test_an_abandoned_forward_lets_the_next_one_go(db: Database, receiver: Receiver, receiver_url: str) -> None:
    await add_calls(db, {"url": receiver_url, "headers": {}, "source": "default"}, "call-c")
    await queue(db, "call-c", count=2)
    receiver.answer(500)

    async with worker(db, RetryPolicy((0.2,), dt.timedelta(milliseconds=10))):  # no time for a retry
        await eventually(lambda: _settled(db), what="every forward settled")

    stored = await forwards(db)
    assert [(f.status, f.last_status_code) for f in stored] == [("abandoned", 500), ("delivered", 200)]
    assert stored[0].last_error is not None
    assert stored[0].last_error.startswith("HTTP 500")
    assert sent(receiver) == [("call-c", 0), ("call-c", 1)]


async def test_a_forward_that_cannot_be_sent_is_settled_and_does_not_hold_its_call(
    db: Database, receiver: Receiver, receiver_url: str
) -> None:
    """A header value httpx cannot encode (not ASCII) fails each attempt like an error answer: the forward
    is retried, then abandoned, and the call's next forward is not held behind it for ever."""
    await add_calls(db, {"url": receiver_url, "headers": {"X-Tenant": "Zürich"}, "source": "call"}, "call-d")
    await queue(db, "call-d", count=2)

    async with worker(db, RetryPolicy((0.1,), dt.timedelta(milliseconds=300))):
        await eventually(lambda: _settled(db), what="every forward settled")

    stored = await forwards(db)
    assert [f.status for f in stored] == ["abandoned", "abandoned"]
    assert all(f.last_error is not None and f.last_error.startswith("UnicodeEncodeError") for f in stored)
    assert receiver.requests == []


async def test_an_upstream_that_trickles_its_answer_is_cut_at_the_timeout(db: Database) -> None:
    """httpx's timeout bounds each phase (connect, each read): an upstream that answers its headers and
    then each few bytes just inside it would hold the attempt for many times the timeout."""
    timeout = 0.3

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(timeout * 0.8)
        answer = b'{"results": []}'
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(answer))
        for start in range(0, len(answer), 4):
            await asyncio.sleep(timeout * 0.8)
            writer.write(answer[start : start + 4])
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await add_calls(db, {"url": f"http://127.0.0.1:{port}/", "headers": {}, "source": "call"}, "call-e")
        await queue(db, "call-e", count=1)
        async with worker(db, RetryPolicy((60,), dt.timedelta(minutes=5)), timeout=timeout):
            await eventually(lambda: _attempted(db), what="the first attempt settled")
    finally:
        server.close()
    [stored] = await forwards(db)
    assert (stored.status, stored.last_error) == ("pending", f"no answer within {timeout:g} s")


async def _attempted(db: Database) -> bool:
    return all(forward.last_error is not None or forward.status != "pending" for forward in await forwards(db))


async def _all(db: Database, status: str) -> bool:
    return all(forward.status == status for forward in await forwards(db))


async def _settled(db: Database) -> bool:
    return all(forward.status != "pending" for forward in await forwards(db))
