"""Calls as they change, pushed to the console's live pages (``GET /v1/console/stream``).

Every change the console shows (a status, a webhook, a transcript, an injection, the recording's end …)
appends to the call's timeline, and every append goes through one numbering statement, which notes
the call in its transaction (``calls.events.touched_calls``). After the commit, :class:`CallNotices`
publishes the ids of the touched calls on the ``switchboard:calls`` channel — at most every
``COALESCE_SECONDS``, all ids at once — through Litestar's channels: Redis pub/sub when
``SWITCHBOARD_REDIS_URL`` is set, so that a page on any replica sees changes made through any other,
in memory otherwise. Each open page (:class:`CallFeed`) subscribes, reads the calls it was told about
(one short read per notice) and pushes them. Nothing polls the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Collection
from typing import Any

import msgspec
from litestar.channels import ChannelsPlugin
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from service.calls.events import touched_calls
from service.db.engine import Database
from service.db.models import Call, utcnow

CALLS_CHANNEL = "switchboard:calls"
COALESCE_SECONDS = 0.1  # notices of one replica are published at most this often
QUIET_SECONDS = 1.0  # a page's feed yields an empty batch after this long without changes (keep-alives)
LOOKBACK_SECONDS = 5.0  # a page that opens first gets the calls changed this recently
INBOX_LIMIT = 1_000


class CallNotices:
    """Publishes the ids of the calls that committed transactions touched (see the module docstring)."""

    def __init__(self, channels: ChannelsPlugin) -> None:
        self._channels = channels
        self._pending: set[str] = set()
        self._scheduled: asyncio.TimerHandle | None = None

    def committed(self, info: dict[str, Any]) -> None:
        """``Database.after_commit`` callback: note the calls the transaction touched."""
        touched = touched_calls(info)
        if not touched:
            return
        self._pending |= touched
        if self._scheduled is None:
            self._scheduled = asyncio.get_running_loop().call_later(COALESCE_SECONDS, self._publish)

    def _publish(self) -> None:
        self._scheduled = None
        ids, self._pending = sorted(self._pending), set()
        with contextlib.suppress(RuntimeError):  # the channels are not started (shutting down)
            self._channels.publish(msgspec.json.encode(ids), CALLS_CHANNEL)


class CallFeed:
    """One console page's stream of changed calls."""

    def __init__(
        self,
        db: Database,
        channels: ChannelsPlugin,
        *,
        quiet_seconds: float = QUIET_SECONDS,
        lookback_seconds: float = LOOKBACK_SECONDS,
    ) -> None:
        self._db = db
        self._channels = channels
        self._quiet = quiet_seconds
        self._lookback = dt.timedelta(seconds=lookback_seconds)

    async def changes(self, call_id: str | None = None) -> AsyncIterator[list[Call]]:
        """The calls changed recently, then every batch of calls as they change (an empty batch after
        ``quiet_seconds`` without changes); ``call_id`` narrows to one call."""
        inbox: asyncio.Queue[bytes] = asyncio.Queue(INBOX_LIMIT)

        async def receive(message: bytes) -> None:
            with contextlib.suppress(asyncio.QueueFull):  # a page this far behind re-reads below anyway
                inbox.put_nowait(message)

        async with (
            self._channels.start_subscription([CALLS_CHANNEL]) as subscriber,
            subscriber.run_in_background(receive, join=False),
        ):
            sent: dict[str, dt.datetime] = {}  # call id → the version last sent: each version goes out once

            def fresh(calls: list[Call]) -> list[Call]:
                new = [call for call in calls if sent.get(call.id) != call.updated_at]
                sent.update((call.id, call.updated_at) for call in new)
                return new

            yield fresh(await self._recent(call_id))  # subscribed first: nothing falls between the two
            while True:
                try:
                    async with asyncio.timeout(self._quiet):
                        messages = [await inbox.get()]
                except TimeoutError:
                    yield []
                    continue
                while not inbox.empty():
                    messages.append(inbox.get_nowait())
                ids = {call for message in messages for call in msgspec.json.decode(message, type=list[str])}
                if call_id is not None:
                    ids &= {call_id}
                yield fresh(await self._read(ids)) if ids else []

    async def _recent(self, call_id: str | None) -> list[Call]:
        query = select(Call).options(selectinload(Call.recording)).where(Call.updated_at > utcnow() - self._lookback)
        if call_id is not None:
            query = query.where(Call.id == call_id)
        async with self._db.read() as session:
            return list((await session.scalars(query.order_by(Call.updated_at))).all())

    async def _read(self, ids: Collection[str]) -> list[Call]:
        query = select(Call).options(selectinload(Call.recording)).where(Call.id.in_(ids))
        async with self._db.read() as session:
            return list((await session.scalars(query.order_by(Call.updated_at))).all())
