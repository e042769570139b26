"""Keeping the transcript search index: each final utterance stored once, in its event's transaction.

:class:`TranscriptIndexer` subscribes to call changes (``calls.changes``): every batch of events the
call writer (webhooks) or the listen journal (text frames) stores reaches it in that transaction, right
after the events were inserted, and :func:`index_utterances` indexes the final transcripts among them.
A final transcript arrives twice (webhook and listen copy); both carry the same utterance key, and the n-th identical
utterance of one source is the n-th of the other, so the row's unique ``(call_id, utterance, ordinal)``
keeps the first copy and ``ON CONFLICT DO NOTHING`` drops the second, also when two transactions race.
The full-text index itself follows the table (SQLite: triggers into FTS5; PostgreSQL: an expression
index). A call's ``utterance_ceiling`` is cleared with every event it stores (``NUMBER``) and settled by
``service.fulltext.ceilings`` once the call has been quiet for a while.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from service.calls.changes import AfterCommit, CallChange
from service.calls.events import StoredEvent
from service.db.models import TranscriptUtterance
from service.db.statements import table_of

_TABLE = table_of(TranscriptUtterance)
_COLUMNS = ("call_id", "seq", "utterance", "role", "text", "occurred_at")
# The ordinal counts the copies of this utterance from the event's own source up to the event itself
# (already inserted): a range of ix_call_event_utterance, however long the call. ``WHERE true`` lets
# SQLite tell the upsert clause from a join constraint after INSERT … SELECT.
_INSERT = text(
    "INSERT INTO transcript_utterance (call_id, seq, utterance, ordinal, role, text, occurred_at) "
    "SELECT :call_id, :seq, :utterance, "
    "(SELECT count(*) FROM call_event AS e WHERE e.call_id = :call_id AND e.utterance = :utterance "
    "AND e.source = :source AND e.seq <= :seq), :role, :text, :occurred_at WHERE true "
    "ON CONFLICT (call_id, utterance, ordinal) DO NOTHING"
).bindparams(
    *(bindparam(name, type_=_TABLE.c[name].type) for name in _COLUMNS),
    bindparam("source", type_=_TABLE.c.role.type),
)


def utterance_row(event: StoredEvent) -> dict[str, Any] | None:
    """The parameters that index ``event``, or None when it is not a final transcript."""
    if event.utterance is None or not isinstance(event.payload, dict):
        return None
    return {
        "call_id": event.call_id,
        "seq": event.seq,
        "utterance": event.utterance,
        "source": event.source,
        "role": event.payload["role"],
        "text": event.payload["transcript"],
        "occurred_at": event.occurred_at,
    }


async def index_utterances(connection: AsyncConnection, events: Sequence[StoredEvent]) -> None:
    """Index the final transcripts among ``events`` (inserted by this transaction just before)."""
    rows = [row for row in map(utterance_row, events) if row is not None]
    if rows:
        await connection.execute(_INSERT, rows)


class TranscriptIndexer:
    """Subscribed to call changes: indexes a change's final utterances in its transaction."""

    async def stage(self, session: AsyncSession, change: CallChange) -> AfterCommit | None:
        if any(event.utterance is not None for event in change.events):
            await index_utterances(await session.connection(), change.events)
        return None
