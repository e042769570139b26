"""Calls as they change, for the console's live pages (``GET /v1/console/stream``).

Every change to a call (a status, a webhook, a transcript, the recording's end …) bumps its
``updated_at``: appending to its timeline increments ``last_event_seq`` on the call row. So one query
per poll — the calls updated since the last one — follows everything the console shows, on whichever
replica wrote it. Each poll is its own short read; nothing is held open between polls.

Commits are not instantaneous and replicas' clocks differ slightly, so a row can become visible with an
``updated_at`` a little older than the newest one already seen. Each poll therefore looks back
``lookback`` seconds and remembers which versions it already sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from service.db.engine import Database
from service.db.models import Call, utcnow

POLL_SECONDS = 1.0
LOOKBACK_SECONDS = 5.0


class CallFeed:
    """Polls the ``call`` table for one subscriber (one console page)."""

    def __init__(self, db: Database, *, poll_seconds: float = POLL_SECONDS, lookback_seconds: float = LOOKBACK_SECONDS):
        self._db = db
        self._poll = poll_seconds
        self._lookback = dt.timedelta(seconds=lookback_seconds)

    async def changes(self, call_id: str | None = None) -> AsyncIterator[list[Call]]:
        """Every poll's newly changed calls (often none), oldest change first; ``call_id`` narrows to one
        call. The first poll gives the calls changed in the last ``lookback`` seconds."""
        newest = utcnow()
        sent: dict[str, dt.datetime] = {}  # call id → the updated_at already sent, within the window
        while True:
            since = newest - self._lookback
            query = select(Call).options(selectinload(Call.recording)).where(Call.updated_at > since)
            if call_id is not None:
                query = query.where(Call.id == call_id)
            # No LIMIT: the window holds the calls active in the last few seconds, and a limit could
            # return the same already-sent rows forever on a busy system.
            async with self._db.read() as session:
                rows = list((await session.scalars(query.order_by(Call.updated_at))).all())
            fresh = [call for call in rows if sent.get(call.id) != call.updated_at]
            for call in fresh:
                sent[call.id] = call.updated_at
            newest = max([newest, *(call.updated_at for call in rows)])
            sent = {key: at for key, at in sent.items() if at > newest - self._lookback}
            yield fresh
            await asyncio.sleep(self._poll)
