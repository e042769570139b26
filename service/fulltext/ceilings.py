"""Utterance ceilings: ``call.utterance_ceiling`` is the id of the call's newest utterance in the
transcript index (0: none), so that a search limited to calls created long ago starts its walk over the
matches where those calls' utterances end (``service.search.service``). Every event a call stores clears
it (``service.db.stores.events.NUMBER``: new utterances may come with it); the lifecycle sweep settles
it again once the call has been quiet for a while. A search counts an unknown ceiling as no bound."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import bindparam, func, select, update

from service.db.engine import Database
from service.db.models import Call, TranscriptUtterance, utcnow
from service.db.statements import table_of

_CALL = table_of(Call)
_TABLE = table_of(TranscriptUtterance)

_SETTLE = (
    update(_CALL)
    .where(
        _CALL.c.id == bindparam("settled_id"),
        _CALL.c.last_event_seq == bindparam("settled_seq"),
        _CALL.c.utterance_ceiling.is_(None),
    )
    .values(
        utterance_ceiling=select(func.coalesce(func.max(_TABLE.c.id), 0))
        .where(_TABLE.c.call_id == _CALL.c.id)
        .scalar_subquery()
    )
)


# A call quiet this long (no event stored) gets its utterance ceiling; at most this many per statement.
SETTLE_AFTER_SECONDS = 60.0
SETTLE_BATCH = 500


async def settle_ceilings(db: Database, *, quiet_for: float = SETTLE_AFTER_SECONDS, batch: int = SETTLE_BATCH) -> int:
    """Give the calls with no event for ``quiet_for`` seconds and no ``utterance_ceiling`` the highest
    id of their utterances (0 without any); how many calls were settled. Run by the lifecycle sweep.

    A call's row is written only if its ``last_event_seq`` is still the one read: an event stored
    meanwhile (its utterances maybe unseen by this statement) clears the ceiling again instead."""
    cutoff = utcnow() - dt.timedelta(seconds=quiet_for)
    settled = 0
    while True:
        async with db.write() as session:
            quiet = (
                select(_CALL.c.id, _CALL.c.last_event_seq)
                .where(_CALL.c.utterance_ceiling.is_(None), _CALL.c.updated_at < cutoff)
                .order_by(_CALL.c.updated_at)
                .limit(batch)
            )
            rows = (await session.execute(quiet)).all()
            if rows:
                params = [{"settled_id": call_id, "settled_seq": seq} for call_id, seq in rows]
                await session.execute(_SETTLE, params)
        settled += len(rows)
        if len(rows) < batch:
            return settled
