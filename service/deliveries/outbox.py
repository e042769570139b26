"""The durable outbox: events become ``webhook_delivery`` rows inside the caller's transaction.

Writing the delivery in the same transaction as the change it reports is what makes delivery
at-least-once without two-phase anything: if the call update commits, the event is stored with it;
if it rolls back, no event escapes. The :class:`~service.deliveries.worker.DeliveryWorker` sends the
rows later, from any replica.

Why no in-memory cache of endpoints: the one SELECT reads a table of a handful of rows inside a
transaction that is open anyway, and it is exact. A cache would be stale across replicas (an endpoint
created on replica B would miss events from replica A for the cache's lifetime) and could reference a
deleted endpoint, whose foreign-key violation would roll back the *caller's* transaction — losing,
say, a Vapi webhook to save a fraction of a millisecond.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, Final

import uuid_utils
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from service.db.models import WebhookDelivery, utcnow
from service.db.stores import outbox as sql

EVENT_TYPES: Final = (
    "call.created",
    "call.status_changed",
    "call.ended",
    "call.report",
    "recording.completed",
    "rule.fired",
    "injection.failed",
    "call.deleted",
    "call.analyzed",  # analytics (service.analytics)
    "rule.notified",  # a rule's notify action (service.rules)
)

# Set on a session that enqueued deliveries; read (and cleared) when it commits or rolls back.
_ENQUEUED_FLAG = "switchboard.deliveries.enqueued"
_ENDPOINTS = "switchboard.deliveries.endpoints"  # session.info: the endpoints read in this transaction
_wakeup_callbacks: set[Callable[[], None]] = set()


def new_message_id() -> str:
    """The ``webhook-id``: time-ordered (UUIDv7) so ids sort like the events, stable across retries."""
    return f"msg_{uuid_utils.uuid7().hex}"


def event_payload(event_type: str, data: dict[str, Any], at: dt.datetime) -> dict[str, Any]:
    """The body every endpoint receives, in the Standard Webhooks shape (``type``, ``timestamp``, ``data``)."""
    return {"type": event_type, "timestamp": at.isoformat().replace("+00:00", "Z"), "data": data}


async def _endpoints(session: AsyncSession) -> list[tuple[Any, tuple[str, ...]]]:
    """The enabled endpoints and their events, read once per transaction (a webhook batch announces
    many calls) and without flushing the caller's pending changes first (they are not read here)."""
    cached: list[tuple[Any, tuple[str, ...]]] | None = session.info.get(_ENDPOINTS)
    if cached is None:
        # A Core statement on the transaction's connection: no flush of the caller's pending changes
        # (they are not read here), none of the session's per-statement bookkeeping.
        rows = await (await session.connection()).execute(sql.ENABLED_ENDPOINTS)
        cached = session.info[_ENDPOINTS] = [(endpoint_id, tuple(events or ())) for endpoint_id, events in rows]
    return cached


def call_of(event_type: str, data: dict[str, Any]) -> str | None:
    """The call an event is about: ``data.id`` of ``call.*`` events (``data.callId`` of ``call.analyzed``),
    ``data.callId`` of the others."""
    call_id = data.get("id", data.get("callId")) if event_type.startswith("call.") else data.get("callId")
    return call_id if isinstance(call_id, str) else None


async def enqueue(session: AsyncSession, event_type: str, data: dict[str, Any]) -> int:
    """Queue ``event_type`` for every enabled endpoint subscribed to it; returns how many deliveries.

    Runs inside the caller's transaction and commits nothing. ``data`` must be JSON-serialisable.
    On PostgreSQL the endpoints read are share-locked on their keys (``FOR KEY SHARE``) until the
    caller commits, so an endpoint deleted concurrently cannot break the caller's transaction with a
    foreign-key violation: the delete waits for the commit and then cascades to the new rows.
    """
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown webhook event type {event_type!r}; known: {', '.join(EVENT_TYPES)}")
    endpoint_ids = [endpoint_id for endpoint_id, events in await _endpoints(session) if event_type in events]
    if not endpoint_ids:
        return 0
    now = utcnow()
    payload = event_payload(event_type, data, now)
    call_id = call_of(event_type, data)
    session.add_all(
        WebhookDelivery(
            endpoint_id=endpoint_id,
            message_id=new_message_id(),
            event_type=event_type,
            payload=payload,
            call_id=call_id,
            status="pending",
            attempts=0,
            next_attempt_at=now,
        )
        for endpoint_id in endpoint_ids
    )
    session.sync_session.info[_ENQUEUED_FLAG] = True
    return len(endpoint_ids)


def subscribe_wakeups(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` after any transaction that enqueued deliveries commits; returns the unsubscriber.

    Lets the worker send a new event within milliseconds instead of at its next poll. Called from
    SQLAlchemy's ``after_commit`` hook, i.e. on the event loop's thread: the callback must not block.
    """
    _wakeup_callbacks.add(callback)
    return lambda: _wakeup_callbacks.discard(callback)


def _after_commit(session: Session) -> None:
    session.info.pop(_ENDPOINTS, None)
    if session.info.pop(_ENQUEUED_FLAG, False):
        for callback in list(_wakeup_callbacks):
            callback()


def _after_rollback(session: Session) -> None:
    session.info.pop(_ENDPOINTS, None)
    session.info.pop(_ENQUEUED_FLAG, None)


event.listen(Session, "after_commit", _after_commit)
event.listen(Session, "after_rollback", _after_rollback)
