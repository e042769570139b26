"""The listen sessions' timeline events (text frames, connects, gaps, failures), written in shared batches.

At 200 live calls the listen sockets' text frames arrive about 120 times a second; one write transaction
each kept the (single, on SQLite) writer busy and delayed everything queued behind it, new calls
included. Sessions add events without waiting; one task writes whatever gathered over ``WINDOW_SECONDS``
in one transaction, calls in id order (the order the webhook writer locks them in, so the two cannot
deadlock on PostgreSQL). Per call, events keep their order and get consecutive sequence numbers.

Each transaction hands its events to the call-change subscribers (:mod:`service.calls.changes`, e.g.
the rule engine's transcript milestones) as changes of origin ``listen``, without reading the calls.

While the database is unavailable, events wait (at most ``PENDING_LIMIT`` per call, the oldest dropped)
and are retried every ``RETRY_SECONDS``. A batch that fails for another reason is retried call by call,
so one bad call cannot hold back the others.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from service.calls.changes import CallChange, CallChanges
from service.calls.events import NewEvent, StoredEvent, insert_events, number_events_of_calls
from service.db.engine import Database
from service.errors import database_unavailable
from service.tasks import TaskOwner

log = structlog.get_logger(__name__)

WINDOW_SECONDS = 0.2  # the delay a text frame's event may wait, for rules too
RETRY_SECONDS = 1.0
PENDING_LIMIT = 10_000


class EventJournal:
    def __init__(self, db: Database, changes: CallChanges, *, window: float = WINDOW_SECONDS) -> None:
        self._db = db
        self._changes = changes
        self._window = window
        self._pending: dict[str, list[NewEvent]] = {}
        self._inflight: set[str] = set()
        self._wake = asyncio.Event()
        self._urgent = asyncio.Event()
        self._pass_done: asyncio.Future[set[str]] | None = None
        self._writer = TaskOwner("listen-journal")  # one writer task, started by the first event
        self._closed = False

    def add(self, call_id: str, event: NewEvent) -> None:
        """Queue ``event`` for the call's timeline."""
        pending = self._pending.setdefault(call_id, [])
        pending.append(event)
        if len(pending) > PENDING_LIMIT:
            del pending[: len(pending) - PENDING_LIMIT]
        self._wake.set()
        if not self._writer and not self._closed:
            self._writer.spawn(self._run(), name="writer", key="writer")

    def pending(self, call_id: str) -> int:
        return len(self._pending.get(call_id, ())) + (call_id in self._inflight)

    async def flush(self, call_id: str) -> bool:
        """Write the call's queued events now; True when they are stored (False: the attempt failed)."""
        while call_id in self._pending or call_id in self._inflight:
            if "writer" not in self._writer:
                return await self._write_now(call_id)
            self._urgent.set()
            self._wake.set()
            failed = await asyncio.shield(self._next_pass())
            if call_id in failed:
                return False
        return True

    async def close(self) -> None:
        """One last attempt for everything queued, then stop."""
        self._closed = True
        await self._writer.close()
        self._inflight.clear()
        batch, self._pending = self._pending, {}
        if batch and (failed := await self._write(batch)):
            self._pending = {call_id: batch[call_id] for call_id in failed}
            log.warning("listen events not stored at shutdown", calls=len(failed))

    # -- the writer ---------------------------------------------------------------------------------

    def _next_pass(self) -> asyncio.Future[set[str]]:
        if self._pass_done is None:
            self._pass_done = asyncio.get_running_loop().create_future()
        return self._pass_done

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            if not self._urgent.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._window):
                        await self._urgent.wait()
            self._wake.clear()
            self._urgent.clear()
            batch, self._pending = self._pending, {}
            self._inflight = set(batch)
            failed = await self._write(batch)
            self._inflight = set()
            for call_id in failed:  # back in front of what arrived meanwhile
                self._pending[call_id] = (batch[call_id] + self._pending.get(call_id, []))[-PENDING_LIMIT:]
            done, self._pass_done = self._pass_done, None
            if done is not None and not done.done():
                done.set_result(failed)
            if failed:
                log.warning(
                    "listen events buffered: database unavailable",
                    calls=len(failed),
                    pending=sum(len(self._pending[c]) for c in failed),
                )
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()

    async def _write(self, batch: dict[str, list[NewEvent]]) -> set[str]:
        """Write ``batch`` in one transaction, else call by call; the ids whose events were not stored."""
        try:
            await self._transaction(batch)
        except Exception as exc:
            if len(batch) == 1 or database_unavailable(exc):  # an outage fails every call alike: wait
                log.warning("listen events not stored", error=type(exc).__name__)
                return set(batch)
            failed: set[str] = set()
            for call_id, events in batch.items():
                try:
                    await self._transaction({call_id: events})
                except Exception as exc_one:
                    log.warning("listen events not stored", call_id=call_id, error=type(exc_one).__name__)
                    failed.add(call_id)
            return failed
        return set()

    async def _transaction(self, batch: dict[str, list[NewEvent]]) -> None:
        """Store ``batch`` and stage its changes for the subscribers; after the commit, publish them."""
        async with self._db.write() as session:
            rows: dict[str, list[StoredEvent]] = await number_events_of_calls(session, batch)
            await insert_events(session, [row for call_rows in rows.values() for row in call_rows])
            changes = [CallChange(call_id, "listen", call_rows) for call_id, call_rows in rows.items()]
            after = await self._changes.stage(session, changes)
        self._changes.committed(after)
        if missing := [call_id for call_id in batch if batch[call_id] and call_id not in rows]:
            log.warning("listen events dropped: their call is not stored", calls=missing)

    async def _write_now(self, call_id: str) -> bool:
        events = self._pending.pop(call_id, None)
        if not events:
            return True
        failed = await self._write({call_id: events})
        if failed:
            self._pending[call_id] = (events + self._pending.get(call_id, []))[-PENDING_LIMIT:]
        return not failed
