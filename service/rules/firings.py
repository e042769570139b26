"""The ``rule_firing`` table: the exactly-once record and the durable timer queue.

A firing row is inserted under the unique ``(rule, call, occurrence)`` key *before* the control POST;
the insert that loses the race (another replica, the other delivery path, a retry) inserts nothing
and so never speaks. Due firings are claimed with ``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL
(SQLite's single writer gives the same guarantee), switched to ``firing`` in the claiming transaction.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from uuid_utils.compat import uuid7

from service.calls.events import NewEvent, append_events
from service.db.engine import Database
from service.db.models import CallEvent, RuleFiring, utcnow
from service.db.stores import firings as sql
from service.deliveries.outbox import enqueue
from service.rules.milestones import Occurrence

# A firing left in "firing" this long was interrupted (crash, kill -9) after its row was written: whether
# the POST left is unknown, so it is closed as failed rather than retried (never speak twice).
STUCK_AFTER = dt.timedelta(seconds=60)


async def insert_firing(
    session: AsyncSession,
    *,
    rule: str,
    call_id: str,
    occurrence: str,
    status: str,
    due_at: dt.datetime,
    detail: dict[str, Any],
) -> uuid.UUID | None:
    """Insert the firing; ``None`` when one exists under the same key (it already fired or is scheduled)."""
    now = utcnow()
    values = {
        "id": uuid7(),
        "rule_name": rule,
        "call_id": call_id,
        "occurrence": occurrence,
        "status": status,
        "due_at": due_at,
        "detail": detail,
        "created_at": now,
        "updated_at": now,
    }
    result = await session.execute(sql.INSERT_ONCE, values)
    firing_id: uuid.UUID | None = result.scalar_one_or_none()
    return firing_id


async def claim_due(db: Database, *, now: dt.datetime, limit: int) -> list[RuleFiring]:
    """Claim up to ``limit`` scheduled firings that are due: each is handed to exactly one claimer."""
    async with db.write() as session:
        rows = list(
            (
                await session.scalars(
                    select(RuleFiring)
                    .where(RuleFiring.status == "scheduled", RuleFiring.due_at <= now)
                    .order_by(RuleFiring.due_at)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
        )
        for row in rows:
            row.status = "firing"
            row.updated_at = now
    return rows


async def reschedule(db: Database, firing_id: uuid.UUID, *, due_at: dt.datetime, detail: dict[str, Any]) -> None:
    """Put a claimed firing back in the queue (a ``user.silent`` whose silence was broken)."""
    async with db.write() as session:
        await session.execute(
            update(RuleFiring)
            .where(RuleFiring.id == firing_id)
            .values(status="scheduled", due_at=due_at, detail=detail, updated_at=utcnow())
        )


async def close_firing(
    session: AsyncSession,
    firing_id: uuid.UUID,
    *,
    status: str,
    injection_id: uuid.UUID | None = None,
    error: str | None = None,
) -> None:
    """Record a firing's outcome (``fired``, ``failed`` or ``skipped``) inside the caller's transaction.

    A ``fired`` outcome also queues the ``rule.fired`` outbound webhook in the same transaction: it
    is sent exactly when the firing is recorded as fired (the outbox delivers it at least once).
    """
    now = utcnow()
    result = await session.execute(
        update(RuleFiring)
        .where(RuleFiring.id == firing_id)
        .values(
            status=status,
            fired_at=now if status == "fired" else None,
            injection_id=injection_id,
            error=error,
            updated_at=now,
        )
        .returning(RuleFiring.call_id, RuleFiring.rule_name, RuleFiring.occurrence, RuleFiring.detail)
    )
    row = result.first()
    if status == "fired" and row is not None:
        await _announce_fired(session, firing_id, row, injection_id=injection_id, at=now)


async def _announce_fired(
    session: AsyncSession, firing_id: uuid.UUID, row: Any, *, injection_id: uuid.UUID | None, at: dt.datetime
) -> None:
    """Queue ``rule.fired`` for a firing closed as fired (``row``: its call, rule, occurrence, detail)."""
    call_id, rule_name, occurrence, detail = row
    data = {
        "callId": call_id,
        "rule": rule_name,
        "firingId": str(firing_id),
        "occurrence": occurrence,
        "milestone": (detail or {}).get("milestone"),
        "injectionId": str(injection_id) if injection_id else None,
        "firedAt": _iso(at),
    }
    await enqueue(session, "rule.fired", data)


def _iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


async def close_notified(session: AsyncSession, firing_id: uuid.UUID, notification: dict[str, Any]) -> bool:
    """Close a ``notify`` firing as fired and queue its ``rule.notified`` webhook (``notification`` plus
    ``notifiedAt``) and ``rule.fired``, inside the caller's transaction. Nothing leaves before that
    transaction commits, so a firing still ``firing`` has surely not notified: closing is conditional on
    it, and False means another delivery (a replica, the sweep) closed it first: notify nothing."""
    now = utcnow()
    result = await session.execute(
        update(RuleFiring)
        .where(RuleFiring.id == firing_id, RuleFiring.status == "firing")
        .values(status="fired", fired_at=now, error=None, updated_at=now)
        .returning(RuleFiring.call_id, RuleFiring.rule_name, RuleFiring.occurrence, RuleFiring.detail)
    )
    row = result.first()
    if row is None:
        return False
    await _announce_fired(session, firing_id, row, injection_id=None, at=now)
    await enqueue(session, "rule.notified", {**notification, "notifiedAt": _iso(now)})
    return True


async def finish_firing(
    db: Database,
    firing_id: uuid.UUID,
    call_id: str,
    *,
    status: str,
    injection_id: uuid.UUID | None = None,
    error: str | None = None,
    event: NewEvent | None = None,
) -> None:
    """Close a firing in its own transaction and journal it in the call's timeline."""
    async with db.write() as session:
        await close_firing(session, firing_id, status=status, injection_id=injection_id, error=error)
        if event is not None:
            await append_events(session, call_id, [event])


async def fail_stuck(db: Database, *, now: dt.datetime) -> tuple[int, list[RuleFiring]]:
    """Close firings interrupted between their row and their outcome (see :data:`STUCK_AFTER`): how many
    were failed, and the ``notify`` firings claimed again instead (their outcome is known: they did not
    notify, see :func:`close_notified`), to be delivered now."""
    async with db.write() as session:
        rows = (
            await session.scalars(
                select(RuleFiring)
                .where(RuleFiring.status == "firing", RuleFiring.updated_at < now - STUCK_AFTER)
                .order_by(RuleFiring.updated_at)
                .limit(1000)
                .with_for_update(skip_locked=True)
            )
        ).all()
        again: list[RuleFiring] = []
        for row in rows:
            row.updated_at = now
            if (row.detail or {}).get("action") == "notify":
                again.append(row)
            else:
                row.status, row.error = "failed", "interrupted: the outcome of the control POST is unknown"
    return len(rows) - len(again), again


async def user_speech(session: AsyncSession, call_id: str, *, limit: int = 50) -> list[tuple[str, dt.datetime]]:
    """The call's latest user ``speech-update`` events, newest first: ``(status, received_at)``."""
    rows = await session.execute(
        select(CallEvent.payload, CallEvent.received_at)
        .where(CallEvent.call_id == call_id, CallEvent.type == "speech-update")
        .order_by(CallEvent.seq.desc())
        .limit(limit)
    )
    found: list[tuple[str, dt.datetime]] = []
    for payload, received_at in rows:
        if (
            isinstance(payload, dict)
            and payload.get("role") == "user"
            and payload.get("status") in ("started", "stopped")
        ):
            found.append((payload["status"], received_at))
    return found


async def list_firings(session: AsyncSession, call_id: str, *, after: uuid.UUID | None, limit: int) -> list[RuleFiring]:
    """A call's firings, oldest first: ids are UUIDv7, so their order is their creation order."""
    query = select(RuleFiring).where(RuleFiring.call_id == call_id)
    if after is not None:
        query = query.where(RuleFiring.id > after)
    return list((await session.scalars(query.order_by(RuleFiring.id).limit(limit))).all())


async def occurrence_key(session: AsyncSession, occurrence: Occurrence) -> str:
    """The firing key of a ``once: false`` rule: the occurrence itself.

    A transcript's key gets its ordinal among identical utterances from the same source, so the
    webhook and the listen copy of the n-th "yes" share a key while two different "yes"es do not.
    """
    if occurrence.milestone != "transcript":
        return occurrence.key
    event = occurrence.event
    same = await session.scalar(  # through ix_call_event_utterance: a range count, however long the call
        select(func.count()).where(
            CallEvent.call_id == occurrence.call_id,
            CallEvent.utterance == occurrence.key,
            CallEvent.source == event["source"],
            CallEvent.seq < event["seq"],
        )
    )
    return f"{occurrence.key}:{(same or 0) + 1}"
