"""Delivery history: settled outbound deliveries and forwards older than the history are deleted in
bounded batches; pending ones, recent ones and their calls stay."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import func, select

from service.db.engine import Database
from service.db.models import UpstreamForward, WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint, utcnow
from service.lifecycle.history import purge_settled
from tests.lifecycle.seed import seed_call

HOUR = dt.timedelta(hours=1)


async def _seed(db: Database) -> dict[str, uuid.UUID]:
    """Deliveries and forwards named by (status, age): ``old`` rows were last attempted 3 h ago."""
    now = utcnow()
    await seed_call(db, "c1", ended_ago=3 * HOUR)
    names: dict[str, uuid.UUID] = {}
    async with db.write() as session:
        endpoint = WebhookEndpoint(url="https://hooks.example.com/x", secret="whsec_x", events=["call.ended"])
        session.add(endpoint)
        await session.flush()
        for status in ("delivered", "abandoned", "pending"):
            for age, ago in (("old", 3 * HOUR), ("new", dt.timedelta(minutes=5))):
                delivery = WebhookDelivery(
                    endpoint_id=endpoint.id,
                    message_id=f"msg_{status}_{age}",
                    event_type="call.ended",
                    payload={"type": "call.ended"},
                    call_id="c1",
                    status=status,
                    next_attempt_at=now - ago,
                )
                session.add(delivery)
                await session.flush()
                session.add(WebhookDeliveryAttempt(delivery_id=delivery.id, attempted_at=now - ago))
                names[f"{status}-{age}"] = delivery.id
                forward = UpstreamForward(call_id="c1", message_type=f"{status}-{age}", body="{}", status=status)
                forward.next_attempt_at = now - ago
                session.add(forward)
    return names


async def test_settled_rows_older_than_the_history_go_in_batches(database_url: str) -> None:
    db = Database(database_url)
    names = await _seed(db)
    assert await purge_settled(db, older_than=HOUR.total_seconds(), batch=1) == 4  # 2 deliveries + 2 forwards
    async with db.read() as session:
        deliveries = set((await session.scalars(select(WebhookDelivery.id))).all())
        forwards = set((await session.scalars(select(UpstreamForward.message_type))).all())
        attempts = await session.scalar(select(func.count()).select_from(WebhookDeliveryAttempt))
    kept = {"delivered-new", "abandoned-new", "pending-old", "pending-new"}
    assert deliveries == {names[name] for name in kept}
    assert forwards == kept
    assert attempts == len(kept), "the purged deliveries' attempts went with them"
    assert await purge_settled(db, older_than=HOUR.total_seconds()) == 0, "nothing more to purge"
    await db.dispose()
