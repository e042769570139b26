"""A call's timeline: appending events with a per-call sequence, and reading them back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import Call, CallEvent, utcnow


@dataclass(frozen=True, slots=True)
class NewEvent:
    source: str  # "vapi" (webhooks), "listen" (listen-socket text frames), "switchboard"
    type: str
    payload: Any
    occurred_at: dt.datetime | None = None
    dedupe_key: str | None = None


async def append_events(session: AsyncSession, call_id: str, events: Sequence[NewEvent]) -> list[CallEvent]:
    """Add ``events`` to the call's timeline inside the caller's transaction.

    Sequence numbers come from an atomic increment of ``call.last_event_seq``: the row lock (PostgreSQL)
    or the write lock (SQLite) orders concurrent writers, so ``seq`` is strictly increasing per call
    with no gaps and no duplicates.
    """
    if not events:
        return []
    result = await session.execute(
        update(Call)
        .where(Call.id == call_id)
        .values(last_event_seq=Call.last_event_seq + len(events))
        .returning(Call.last_event_seq)
        .execution_options(synchronize_session=False)
    )
    return _add_rows(session, call_id, result.scalar_one() - len(events) + 1, events)


def append_events_to_locked(session: AsyncSession, call: Call, events: Sequence[NewEvent]) -> list[CallEvent]:
    """Like :func:`append_events`, for a call row this transaction has locked and loaded (``SELECT … FOR
    UPDATE`` on PostgreSQL; SQLite has one writer): the sequence is taken from the loaded row and
    written back with the rest of the call's changes, saving a statement per call in batches."""
    first = call.last_event_seq + 1
    call.last_event_seq += len(events)
    return _add_rows(session, call.id, first, events)


def _add_rows(session: AsyncSession, call_id: str, first_seq: int, events: Sequence[NewEvent]) -> list[CallEvent]:
    now = utcnow()
    rows = [
        CallEvent(
            call_id=call_id,
            seq=first_seq + index,
            source=event.source,
            type=event.type,
            occurred_at=event.occurred_at or now,
            received_at=now,
            payload=event.payload,
            dedupe_key=event.dedupe_key,
        )
        for index, event in enumerate(events)
    ]
    session.add_all(rows)
    return rows


async def list_events(
    session: AsyncSession,
    call_id: str,
    *,
    after_seq: int = 0,
    limit: int,
    types: Sequence[str] = (),
    source: str | None = None,
) -> list[CallEvent]:
    """Events oldest first, after ``after_seq``, at most ``limit``."""
    query = select(CallEvent).where(CallEvent.call_id == call_id, CallEvent.seq > after_seq)
    if types:
        query = query.where(CallEvent.type.in_(types))
    if source:
        query = query.where(CallEvent.source == source)
    return list((await session.scalars(query.order_by(CallEvent.seq).limit(limit))).all())
