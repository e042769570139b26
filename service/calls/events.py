"""A call's timeline: appending events with a per-call sequence, and reading them back."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import NoResultFound
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.engine import is_postgresql
from service.db.models import CallEvent, utcnow
from service.db.stores import calls as calls_sql
from service.db.stores import events as sql
from service.vapi.messages import FINAL_TRANSCRIPTS


@dataclass(frozen=True, slots=True)
class NewEvent:
    source: str  # "vapi" (webhooks), "listen" (listen-socket text frames), "switchboard"
    type: str
    payload: Any
    occurred_at: dt.datetime | None = None
    dedupe_key: str | None = None
    # The server message's raw body as Vapi sent it (not stored in the timeline: the payload is the
    # redacted copy); what the tap forwards to the call's upstream.
    original: bytes | None = None


# A transcript's ``type``: Vapi may also send the qualified form of the subscription it matched.
TRANSCRIPT_TYPES = frozenset({"transcript", FINAL_TRANSCRIPTS})
_SPACES = re.compile(r"\s+")


def transcript_key(role: str, text: str) -> str:
    """``transcript:user:<digest>``: identical for the webhook and the listen copy of an utterance."""
    normalized = _SPACES.sub(" ", text.strip().lower())
    return f"transcript:{role}:{hashlib.sha256(normalized.encode()).hexdigest()[:16]}"


def utterance_of(event: NewEvent) -> str | None:
    """The :func:`transcript_key` of a final transcript (stored and indexed with it), else None."""
    return utterance_key(event.type, event.payload)


def utterance_key(kind: str, payload: Any) -> str | None:
    """:func:`utterance_of` an event of type ``kind`` with this payload (also for stored rows)."""
    if kind not in TRANSCRIPT_TYPES or not isinstance(payload, dict) or payload.get("transcriptType") != "final":
        return None
    role, text = payload.get("role"), payload.get("transcript")
    return transcript_key(role, text) if isinstance(role, str) and isinstance(text, str) else None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event as :func:`append_events` stored it: what its callers (webhooks, rules) read back."""

    call_id: str
    seq: int
    source: str
    type: str
    occurred_at: dt.datetime
    received_at: dt.datetime
    payload: Any
    dedupe_key: str | None
    utterance: str | None
    original: bytes | None = None  # see NewEvent.original

    def row(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "seq": self.seq,
            "source": self.source,
            "type": self.type,
            "occurred_at": self.occurred_at,
            "received_at": self.received_at,
            "payload": self.payload,
            "dedupe_key": self.dedupe_key,
            "utterance": self.utterance,
        }


async def append_events(session: AsyncSession, call_id: str, events: Sequence[NewEvent]) -> list[StoredEvent]:
    """Add ``events`` to the call's timeline inside the caller's transaction."""
    if not events:
        return []
    numbered = await number_events_of_calls(session, {call_id: events})
    if call_id not in numbered:
        raise NoResultFound(f"call {call_id!r} is not stored")
    await insert_events(session, numbered[call_id])
    return numbered[call_id]


async def number_events_of_calls(
    session: AsyncSession, batch: Mapping[str, Sequence[NewEvent]], *, locked: bool = False
) -> dict[str, list[StoredEvent]]:
    """Give each call's events its next sequence numbers (for :func:`insert_events`, same transaction),
    with one ``UPDATE … RETURNING`` per distinct number of events. Calls that do not exist are left out
    of the result.

    Sequence numbers come from an atomic increment of ``call.last_event_seq``: the row lock (PostgreSQL)
    or the write lock (SQLite) orders concurrent writers, so ``seq`` is strictly increasing per call
    with no gaps and no duplicates. On PostgreSQL several rows are locked in id order first, as every
    other multi-call writer does, so that two such transactions cannot deadlock (``locked``: the caller
    already holds their locks, taken in that order). This is the one way events get their numbers.
    """
    counts = {call_id: len(events) for call_id, events in batch.items() if events}
    if not counts:
        return {}
    ids = sorted(counts)
    connection = await session.connection()
    if len(ids) > 1 and not locked and is_postgresql(session):
        await connection.execute(calls_sql.LOCK_IN_ORDER, {"call_ids": ids})
    # One statement per distinct count (usually one or two): each shape is compiled once, whatever
    # the batch's size, where a CASE over the calls would be a new statement for every batch size.
    by_count: dict[int, list[str]] = {}
    for call_id in ids:
        by_count.setdefault(counts[call_id], []).append(call_id)
    last: dict[str, int] = {}
    for count, call_ids in by_count.items():
        result = await connection.execute(sql.NUMBER, {"count": count, "call_ids": call_ids, "now": utcnow()})
        last.update(result.tuples().all())
    session.info.setdefault(TOUCHED_CALLS, set()).update(last)
    return {
        call_id: _numbered(call_id, last[call_id] - counts[call_id] + 1, batch[call_id])
        for call_id in ids
        if call_id in last
    }


# ``session.info`` key: the ids of the calls whose timelines the transaction added to.
TOUCHED_CALLS = "switchboard.touched_calls"


def touched_calls(info: dict[str, Any]) -> set[str]:
    """The calls whose timelines a committed transaction added to (its ``session.info``)."""
    touched: set[str] = info.pop(TOUCHED_CALLS, set())
    return touched


def _numbered(call_id: str, first_seq: int, events: Sequence[NewEvent]) -> list[StoredEvent]:
    now = utcnow()
    return [
        StoredEvent(
            call_id,
            first_seq + index,
            event.source,
            event.type,
            event.occurred_at or now,
            now,
            event.payload,
            event.dedupe_key,
            utterance_of(event),
            event.original,
        )
        for index, event in enumerate(events)
    ]


async def insert_events(session: AsyncSession, events: Sequence[StoredEvent]) -> None:
    """Insert numbered events: one multi-row INSERT, no ORM objects (the timeline's hot path); their
    final transcripts go into the transcript search index in the same transaction."""
    if events:
        # On the transaction's connection: the session's execute adds ORM bookkeeping for nothing here.
        await (await session.connection()).execute(sql.INSERT_EVENTS, [event.row() for event in events])


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
