"""Catching up: calls Vapi created while Switchboard was not listening (down, or its webhooks lost) are
found by listing Vapi's calls created after the latest ``createdAt`` the previous round listed (at
start-up: one interval before the newest call stored), at start-up and then every
``SWITCHBOARD_VAPI_CATCH_UP_SECONDS``, and imported through the call writer (the listen
supervisor, subscribed to call changes, listens to those still live).

Listing follows the SDK's ``calls.list`` parameters (vapi-server-sdk 3.0.0), bounds included:
``createdAtGe`` the last seen ``createdAt``, ``limit`` a page. Vapi answers newest first, so a full page is
followed by the next older one, ``createdAtLe`` its oldest ``createdAt``: calls created in the same
millisecond as a page's oldest are listed again rather than skipped (those already listed are known by
id). A round reads at most :data:`MAX_PAGES` pages; a longer backlog is walked on by the next round from
where this one stopped. With nothing seen yet, the window starts :data:`FIRST_WINDOW` ago (not the whole
history of the account).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import func, select

from service.calls.events import NewEvent
from service.calls.redact import redact
from service.calls.tracking import merge_vapi_call, parse_timestamp
from service.calls.writer import CallWriter
from service.db.engine import Database
from service.db.models import Call, utcnow
from service.tasks import TaskOwner
from service.vapi.client import VapiClient

log = structlog.get_logger(__name__)

FIRST_WINDOW = dt.timedelta(days=1)
MAX_PAGES = 50  # per round: a backlog larger than this is finished by the next rounds


@dataclass(frozen=True, slots=True)
class Window:
    """Where a newest-first walk through Vapi's calls stands: the next page is of the calls created from
    ``since`` to ``before`` (both included, ``before`` None for now), ``listed`` the ids already read
    that were created at ``before`` itself."""

    since: dt.datetime
    before: dt.datetime | None = None
    listed: frozenset[str] = frozenset()

    def after(self, page: list[dict[str, Any]], limit: int) -> Window | None:
        """The window of the next (older) page after ``page``; None when it was the last (not full, or
        without a readable ``createdAt``)."""
        if len(page) < limit:
            return None
        dated = [
            (moment, item["id"])
            for item in page
            if isinstance(item.get("id"), str) and (moment := parse_timestamp(item.get("createdAt"))) is not None
        ]
        if not dated:
            return None
        oldest = min(moment for moment, _ in dated)
        listed = frozenset(call_id for moment, call_id in dated if moment == oldest)
        if oldest != self.before:
            return Window(self.since, oldest, listed)
        if listed <= self.listed:
            # A whole page of calls created in one millisecond, all read already: the listing has no
            # offset to reach any more of that millisecond, so step past it.
            log.warning("a full page of Vapi calls share one createdAt; going on below it", limit=limit)
            return Window(self.since, oldest - dt.timedelta(milliseconds=1))
        return Window(self.since, oldest, listed | self.listed)


class CatchUp:
    """Imports the calls Vapi created since the last seen ``createdAt`` (``start()``/``close()``)."""

    def __init__(
        self, db: Database, writer: CallWriter, vapi: VapiClient, *, interval: float, page_size: int = 100
    ) -> None:
        self._db = db
        self._writer = writer
        self._vapi = vapi
        self._interval = interval
        self._page_size = page_size
        self._owner = TaskOwner("vapi-catch-up")
        self._stop = asyncio.Event()
        self._walk: Window | None = None  # a backlog's walk cut by MAX_PAGES, for the next round
        # Where the next round starts: the newest createdAt the rounds listed, not the newest stored
        # (webhooks store newer calls while an older one's were lost). None: not started yet.
        self._since: dt.datetime | None = None
        self._round_newest: dt.datetime | None = None  # of the round (or walk) under way

    async def start(self) -> None:
        self._owner.spawn(self._run(), name="timer")

    async def close(self, timeout: float) -> None:
        self._stop.set()
        await self._owner.close(timeout)

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                imported = await self.run_once()
                if imported:
                    log.info("caught up with Vapi", imported=imported)
            except Exception as exc:  # Vapi or the database away: the next round tries again
                log.warning("catching up with Vapi failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._stop.wait()

    async def last_seen(self) -> dt.datetime:
        """The latest Vapi ``createdAt`` of a stored call (or :data:`FIRST_WINDOW` ago)."""
        async with self._db.read() as session:
            latest: dt.datetime | None = await session.scalar(select(func.max(Call.vapi_created_at)))
        return latest if latest is not None else utcnow() - FIRST_WINDOW

    async def run_once(self) -> int:
        """List and import the calls created since the newest ``createdAt`` the previous rounds listed (or
        go on with the walk the previous round cut); how many were new.

        The first round starts one interval before the newest call stored: a call whose webhooks were
        lost after the last round before a stop is older than the calls webhooks stored since."""
        if self._walk is not None:
            window: Window | None = self._walk
        elif self._since is not None:
            window = Window(self._since)
        else:
            window = Window(await self.last_seen() - dt.timedelta(seconds=self._interval))
        self._walk = None
        imported = 0
        for _ in range(MAX_PAGES):
            assert window is not None
            page = await self._vapi.list_calls(
                created_at_ge=window.since, created_at_le=window.before, limit=self._page_size
            )
            imported += await self._import(page)
            self._note_newest(page)
            since, window = window.since, window.after(page, self._page_size)
            if window is None:  # the round is complete: the next starts from the newest it listed
                self._since = since if self._round_newest is None else max(since, self._round_newest)
                self._round_newest = None
                return imported
        self._walk = window
        return imported

    def _note_newest(self, page: list[dict[str, Any]]) -> None:
        for item in page:
            moment = parse_timestamp(item.get("createdAt"))
            if moment is not None and (self._round_newest is None or moment > self._round_newest):
                self._round_newest = moment

    async def _import(self, page: list[dict[str, Any]]) -> int:
        """Store the calls of ``page`` Switchboard does not know yet (nor erased), in one writer transaction."""
        listed = {item["id"]: item for item in page if isinstance(item.get("id"), str)}
        if not listed:
            return 0
        async with self._db.read() as session:
            known = set((await session.scalars(select(Call.id).where(Call.id.in_(list(listed))))).all())
        new = [call_id for call_id in listed if call_id not in known]
        if not new:
            return 0
        async with self._writer.transaction() as unit:
            calls = await unit.lock(new, origin="import")
            for call_id, call in calls.items():
                before = unit.status_before(call)
                merge_vapi_call(call, listed[call_id])
                kind = "call.imported" if before is None else "call.refreshed"
                event = NewEvent("switchboard", kind, {**redact(listed[call_id]), "caughtUp": True})
                unit.record(call, [event], origin="import", previous_status=before)
        return len(calls)  # an erased call is listed but never stored again
