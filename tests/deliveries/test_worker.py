"""The delivery worker against real databases and a real receiver on loopback."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, get_args

import httpx
import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from service.db.engine import Database
from service.db.models import WebhookDeliveryAttempt, WebhookEndpoint
from service.deliveries.outbox import EVENT_TYPES, enqueue
from service.deliveries.retry import RetryPolicy
from service.deliveries.schemas import EventType
from service.deliveries.worker import DeliveryWorker
from service.metrics import Metrics
from service.outbound_urls import IPAddress
from tests.conftest import statements_sent
from tests.deliveries.conftest import Receiver, add_endpoint, attempts_of, deliveries_of
from tests.harness import eventually
from tests.servers import bind_loopback, url_of

FAST = RetryPolicy(delays=(0.05,))
StartWorker = Callable[..., Awaitable[DeliveryWorker]]


@pytest.fixture
async def start_worker(db: Database) -> AsyncIterator[StartWorker]:
    workers: list[DeliveryWorker] = []

    async def start(**options: Any) -> DeliveryWorker:
        options.setdefault("allow_private", True)
        options.setdefault("policy", FAST)
        options.setdefault("metrics", Metrics())
        worker = DeliveryWorker(options.pop("database", db), **options)
        await worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        await worker.close(5)


async def emit(db: Database, event_type: str = "call.created", **data: Any) -> int:
    async with db.write() as session:
        return await enqueue(session, event_type, data or {"callId": "call-1"})


async def all_settled(db: Database) -> bool:
    return all(delivery.status != "pending" for delivery in await deliveries_of(db))


def test_event_types_match_the_api_schema() -> None:
    assert get_args(EventType) == EVENT_TYPES


async def test_enqueue_writes_one_delivery_per_subscribed_enabled_endpoint(db: Database) -> None:
    subscribed = await add_endpoint(db, "http://127.0.0.1:9/a", ["call.created", "call.ended"])
    await add_endpoint(db, "http://127.0.0.1:9/b", ["call.ended"])
    disabled = await add_endpoint(db, "http://127.0.0.1:9/c", ["call.created"])
    async with db.write() as session:
        (await session.get(WebhookEndpoint, disabled.id)).enabled = False  # type: ignore[union-attr]

    assert await emit(db, "call.created", callId="c1") == 1
    assert await emit(db, "rule.fired", callId="c1") == 0
    [delivery] = await deliveries_of(db)
    assert delivery.endpoint_id == subscribed.id
    assert delivery.status == "pending"
    assert delivery.message_id.startswith("msg_")
    assert delivery.payload["type"] == "call.created"
    assert delivery.payload["data"] == {"callId": "c1"}
    assert delivery.payload["timestamp"].endswith("Z")
    with pytest.raises(ValueError, match="unknown webhook event type"):
        await emit(db, "call.exploded")


async def test_endpoints_are_read_once_per_transaction_and_fresh_in_the_next(db: Database) -> None:
    """One webhook batch announces many calls: the endpoints are read once per transaction (and the
    caller's pending changes are not flushed for it); a later transaction sees later endpoints."""
    await add_endpoint(db, "http://127.0.0.1:9/a", ["call.created", "call.ended"])
    with statements_sent(db.write_engine) as statements:
        async with db.write() as session:
            assert [await enqueue(session, "call.created", {"callId": f"c{n}"}) for n in range(3)] == [1, 1, 1]
            assert await enqueue(session, "call.ended", {"callId": "c0"}) == 1
            assert sum("FROM webhook_endpoint" in s for s in statements) == 1
            assert not any(s.lstrip().startswith("INSERT") for s in statements), "nothing flushed for the read"
    await add_endpoint(db, "http://127.0.0.1:9/b", ["call.ended"])
    assert await emit(db, "call.ended", callId="c1") == 2
    assert len(await deliveries_of(db)) == 6


async def test_a_rolled_back_transaction_enqueues_nothing(db: Database) -> None:
    await add_endpoint(db, "http://127.0.0.1:9/a")

    async def failing_change() -> None:
        async with db.write() as session:
            assert await enqueue(session, "call.created", {"callId": "c1"}) == 1
            raise RuntimeError("the caller's change failed")

    with pytest.raises(RuntimeError):
        await failing_change()
    assert await deliveries_of(db) == []


async def test_an_enqueued_event_arrives_signed_soon_after_commit(
    db: Database, receiver: Receiver, receiver_url: str, start_worker: StartWorker
) -> None:
    endpoint = await add_endpoint(db, receiver_url)
    metrics = Metrics()
    # A long poll interval: only the commit wake-up can make this fast.
    await start_worker(poll_interval=30.0, metrics=metrics)
    await emit(db, callId="c1")
    await receiver.wait_for(1, timeout=3)
    [request] = receiver.requests
    body = Webhook(endpoint.secret).verify(request.body, request.headers)
    assert body["type"] == "call.created"
    assert body["data"] == {"callId": "c1"}
    assert request.headers["content-type"] == "application/json"
    await eventually(lambda: all_settled(db))
    [delivery] = await deliveries_of(db)
    assert delivery.status == "delivered"
    assert request.headers["webhook-id"] == delivery.message_id
    assert metrics.registry.get_sample_value("switchboard_webhook_deliveries_total", {"outcome": "delivered"}) == 1
    assert metrics.registry.get_sample_value("switchboard_webhook_delivery_attempt_seconds_count") == 1


async def test_410_disables_the_endpoint_and_abandons_its_queue(
    db: Database, receiver: Receiver, receiver_url: str, start_worker: StartWorker
) -> None:
    endpoint = await add_endpoint(db, receiver_url)
    await emit(db, callId="c1")
    await emit(db, callId="c2")
    receiver.answer(410, 410)
    await start_worker(concurrency=1)
    await eventually(lambda: all_settled(db))
    assert len(receiver.requests) == 1  # the second delivery was abandoned, never sent
    deliveries = await deliveries_of(db)
    assert [delivery.status for delivery in deliveries] == ["abandoned", "abandoned"]
    assert {delivery.last_status_code for delivery in deliveries} == {410, None}
    async with db.read() as session:
        stored = await session.get(WebhookEndpoint, endpoint.id)
    assert stored is not None
    assert stored.enabled is False
    assert "410" in (stored.disabled_reason or "")
    assert await emit(db, callId="c3") == 0  # a disabled endpoint gets nothing new


async def test_retry_after_is_honoured(
    db: Database, receiver: Receiver, receiver_url: str, start_worker: StartWorker
) -> None:
    await add_endpoint(db, receiver_url)
    receiver.answer((503, {"Retry-After": "1"}))
    await start_worker(policy=RetryPolicy(delays=(0.05, 3.0)))
    await emit(db)
    await receiver.wait_for(2, timeout=5)
    first, second = receiver.requests
    # The schedule alone would have retried after 0.05 s.
    assert 0.9 <= second.at - first.at < 2.5
    assert first.headers["webhook-id"] == second.headers["webhook-id"]
    await eventually(lambda: all_settled(db))
    [delivery] = await deliveries_of(db)
    assert [attempt.status_code for attempt in await attempts_of(db, delivery.id)] == [503, 200]


async def test_private_destinations_are_refused_at_delivery_time_too(
    db: Database, receiver: Receiver, receiver_url: str, start_worker: StartWorker
) -> None:
    # Stored while private destinations were allowed (or DNS said otherwise then).
    await add_endpoint(db, receiver_url)
    await start_worker(allow_private=False, policy=RetryPolicy(delays=(60.0,)))
    await emit(db)

    async def attempted() -> bool:
        deliveries = await deliveries_of(db)
        return bool(deliveries and deliveries[0].last_error)

    await eventually(attempted)
    [delivery] = await deliveries_of(db)
    assert delivery.status == "pending"  # DNS may change back: retried later
    assert delivery.next_attempt_at > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    [attempt] = await attempts_of(db, delivery.id)
    assert attempt.status_code is None
    assert "refused" in (attempt.error or "")
    assert "loopback" in (attempt.error or "")
    assert receiver.requests == []


async def test_a_delivery_is_abandoned_once_it_is_too_old(db: Database, start_worker: StartWorker) -> None:
    closed = bind_loopback()  # bound, never listening: connection refused
    try:
        await add_endpoint(db, url_of(closed) + "/hooks")
        await emit(db)
        await start_worker(policy=RetryPolicy(delays=(0.05,), max_age=dt.timedelta(seconds=1)))
        await eventually(lambda: all_settled(db))
    finally:
        closed.close()
    [delivery] = await deliveries_of(db)
    assert delivery.status == "abandoned"
    attempts = await attempts_of(db, delivery.id)
    assert len(attempts) >= 2
    assert all(attempt.status_code is None and "ConnectError" in (attempt.error or "") for attempt in attempts)


async def test_two_replicas_never_send_one_attempt_twice(
    db: Database, database_url: str, receiver: Receiver, receiver_url: str
) -> None:
    await add_endpoint(db, receiver_url)
    receiver.delay = 0.02
    count = 40
    replicas = [Database(database_url), Database(database_url)]
    metrics = [Metrics(), Metrics()]
    workers = [
        DeliveryWorker(
            replica, metrics=meter, allow_private=True, policy=FAST, concurrency=4, batch_size=3, poll_interval=0.05
        )
        for replica, meter in zip(replicas, metrics, strict=True)
    ]
    try:
        for worker in workers:
            await worker.start()
        async with db.write() as session:
            for index in range(count):
                await enqueue(session, "call.created", {"callId": f"c{index}"})
        await receiver.wait_for(count, timeout=15)
        await eventually(lambda: all_settled(db))
        await asyncio.sleep(0.2)  # anything sent twice would have arrived by now
    finally:
        for worker in workers:
            await worker.close(5)
        for replica in replicas:
            await replica.dispose()
    assert len(receiver.requests) == count
    shares = [
        meter.registry.get_sample_value("switchboard_webhook_deliveries_total", {"outcome": "delivered"}) or 0
        for meter in metrics
    ]
    assert sum(shares) == count
    assert all(shares), "both replicas should have taken part"
    assert all(len(posts) == 1 for posts in receiver.by_message.values())
    for delivery in await deliveries_of(db):
        assert delivery.status == "delivered"
        assert delivery.attempts == 1
        assert len(await attempts_of(db, delivery.id)) == 1


async def test_close_lets_a_running_attempt_finish(
    db: Database, receiver: Receiver, receiver_url: str, start_worker: StartWorker
) -> None:
    await add_endpoint(db, receiver_url)
    receiver.delay = 0.3
    worker = await start_worker()
    await emit(db)
    await receiver.wait_for(1)
    await worker.close(5)
    assert worker.in_flight == 0
    [delivery] = await deliveries_of(db)
    assert delivery.status == "delivered"


async def test_requests_go_to_the_checked_address(db: Database, start_worker: StartWorker) -> None:
    """DNS rebinding: the worker connects to the address it checked, not to a second lookup's answer."""
    seen: list[httpx.Request] = []

    def receive(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    async def resolve(host: str, port: int) -> list[IPAddress]:
        assert (host, port) == ("hooks.example.com", 8443)
        return [ipaddress.ip_address("93.184.216.34")]

    endpoint = await add_endpoint(db, "https://hooks.example.com:8443/in")
    http = httpx.AsyncClient(transport=httpx.MockTransport(receive))
    try:
        await start_worker(allow_private=False, resolver=resolve, http_client=http)
        await emit(db)
        await eventually(lambda: all_settled(db))
    finally:
        await http.aclose()
    [request] = seen
    assert str(request.url) == "https://93.184.216.34:8443/in"
    assert request.headers["host"] == "hooks.example.com:8443"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    payload = Webhook(endpoint.secret).verify(request.content, dict(request.headers))
    assert payload["type"] == "call.created"
    assert json.loads(request.content) == payload


async def test_claims_skip_rows_leased_by_another_replica(db: Database, database_url: str) -> None:
    """The claim itself: a second claimer finds nothing while the first one's lease runs."""
    await add_endpoint(db, "http://127.0.0.1:9/a")
    await emit(db)
    first = DeliveryWorker(db, metrics=Metrics(), allow_private=True)
    other_db = Database(database_url)
    second = DeliveryWorker(other_db, metrics=Metrics(), allow_private=True)
    try:
        [claimed] = await first._claim(10)
        assert claimed.attempt == 1
        assert await second._claim(10) == []
        async with db.read() as session:
            stored = (await session.scalars(select(WebhookEndpoint))).one()
        assert stored.enabled
    finally:
        await first.close(1)
        await second.close(1)
        await other_db.dispose()


async def test_an_endpoint_deleted_during_an_attempt_is_no_error(
    db: Database, receiver: Receiver, receiver_url: str, start_worker: StartWorker
) -> None:
    endpoint = await add_endpoint(db, receiver_url)
    receiver.delay = 0.3
    worker = await start_worker()
    await emit(db)
    await receiver.wait_for(1)
    async with db.write() as session:
        await session.delete(await session.get(WebhookEndpoint, endpoint.id))

    async def idle() -> bool:
        return worker.in_flight == 0

    await eventually(idle)
    assert await deliveries_of(db) == []
    async with db.read() as session:
        assert (await session.scalars(select(WebhookDeliveryAttempt))).all() == []
