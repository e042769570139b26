"""The owner of every listen session: one named task per live call, bounded, accounted for at shutdown.

Modelled on aiojobs' scheduler and Litestar's channels plugin: spawn with a limit, failures always
reach a handler (logged, journalled, counted), ``close()`` refuses new work, asks sessions to stop,
waits within a timeout, cancels the rest and awaits everything.

The supervisor subscribes to call changes (:mod:`service.calls.changes`): a call that becomes live
with a listenUrl gets its lease in the transaction that stored the change, and its session starts
once that committed; an answered or ended call is told to its session.

With several replicas, a session runs only where the call's lease was taken (see ``leases``). A
maintenance task renews the leases of running sessions, stops sessions whose lease was lost, and
adopts live calls that nobody records (new calls first seen elsewhere, calls of a dead replica, calls
still live after a restart).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from service.calls import status as call_status
from service.calls.changes import AfterCommit, CallChange
from service.db.models import Call
from service.listen.journal import EventJournal
from service.listen.leases import LeaseKeeper
from service.listen.relay import LiveRelay
from service.listen.session import CallTarget, ListenSession
from service.metrics import Metrics
from service.tasks import TaskOwner

log = structlog.get_logger(__name__)

# A new session for a call: its id, its live relay, and what to connect to when already known.
SessionFactory = Callable[[str, LiveRelay, CallTarget | None], ListenSession]
CRASH_BACKOFF_SECONDS = 2.0  # doubled per crash of the same call, up to the cap
CRASH_BACKOFF_CAP_SECONDS = 300.0
HEALTHY_SECONDS = 60.0  # a session that ran this long before it crashed starts the backoff over
MAX_CRASHES_AFTER_END = 1  # a call that ended gets this many more attempts (to finalise) after a crash


@dataclass(slots=True)
class _Crashes:
    """A call whose session crashed: not restarted before ``retry_at``; never again once ``given_up``."""

    count: int = 0
    retry_at: float = 0.0
    after_end: int = 0
    given_up: bool = False


class ListenSupervisor:
    def __init__(
        self,
        session_factory: SessionFactory,
        *,
        leases: LeaseKeeper,
        journal: EventJournal,
        metrics: Metrics,
        maintain_interval: float,
        limit: int = 1000,
    ) -> None:
        self._session_factory = session_factory
        self._leases = leases
        self._metrics = metrics
        self._maintain_interval = maintain_interval
        self._limit = limit
        self._sessions: dict[str, ListenSession] = {}
        self._relays: dict[str, LiveRelay] = {}
        self._tasks = TaskOwner("listen", limit=limit)  # one session task per call, keyed by call id
        self._maintainer = TaskOwner("listen-leases")
        self._crashes: dict[str, _Crashes] = {}  # in memory: a restart retries, still with backoff
        self._closing = False
        self._journal = journal  # one writer for every session's events, closed after them
        metrics.track_active_sessions(lambda: len(self._tasks))

    @property
    def active(self) -> int:
        return len(self._tasks)

    def relay(self, call_id: str) -> LiveRelay | None:
        """The live relay of a call recorded by this replica."""
        return self._relays.get(call_id)

    async def start(self) -> None:
        """Adopt calls left live (restart) and keep leases renewed from now on."""
        await self._resume_from_dead_processes_here()
        await self._adopt_unowned()
        self._maintainer.spawn(self._maintain(), name="maintain")

    async def stage(self, session: AsyncSession, change: CallChange) -> AfterCommit | None:
        """Call changes (subscribed): lease a call that needs a session here in the change's
        transaction; after the commit, start its session or tell the running one what happened."""
        call = change.call
        if call is None:
            return None
        if call.status == "ended":
            return partial(self.call_ended, call.id)
        if not call.listen_url or not call_status.is_live(call.status):
            return None
        if call.id in self._tasks:
            return partial(self.call_answered, call.id) if call.status in call_status.ANSWERED else None
        if self._closing or not self._tasks.free or self._backing_off(call.id) or self._leases.held_elsewhere(call):
            return None
        claimed = await self._leases.claim(session, call.id)
        return partial(self.ensure_listening, call.id, claimed=call) if claimed else None

    def ensure_listening(self, call_id: str, *, claimed: Call | None = None) -> None:
        """Start a session for the call unless one runs here (idempotent); it runs only under a lease.

        ``claimed``: the call as committed with its lease taken (:meth:`stage`); the session connects
        from it at once instead of reading the call back first (the first seconds of audio are at stake
        when many calls start)."""
        if self._closing or call_id in self._tasks:
            return
        if self._backing_off(call_id):
            return  # a crash loop backs off (and ends once the call has ended)
        if not self._tasks.free:
            log.error("listen session limit reached; call left to other replicas", call_id=call_id, limit=self._limit)
            return
        target = None
        if claimed is not None and claimed.listen_url:
            answered = claimed.status in call_status.ANSWERED
            target = CallTarget(claimed.listen_url, bool(claimed.listen_auth), answered)
        leased = claimed is not None
        self._tasks.spawn(self._run(call_id, leased, target), name=call_id, key=call_id)

    def call_answered(self, call_id: str) -> None:
        session = self._sessions.get(call_id)
        if session is not None:
            session.call_answered()

    def call_ended(self, call_id: str) -> None:
        session = self._sessions.get(call_id)
        if session is not None:
            session.call_ended()

    async def _run(self, call_id: str, leased: bool, target: CallTarget | None) -> None:
        acquired = leased
        session: ListenSession | None = None
        started = time.monotonic()
        try:
            acquired = acquired or await self._leases.acquire(call_id)
            if not acquired or self._closing:
                return
            relay = LiveRelay()
            session = self._session_factory(call_id, relay, target)
            self._sessions[call_id], self._relays[call_id] = session, relay
            await session.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # One session's crash never touches another: reported (the session journals it too), slot freed.
            log.exception("listen session crashed", call_id=call_id)
            ended = session.ended if session is not None else False
            self._crashed(call_id, ended=ended, ran_for=time.monotonic() - started)
        else:
            self._crashes.pop(call_id, None)
        finally:
            self._sessions.pop(call_id, None)
            relay_ = self._relays.pop(call_id, None)
            if relay_ is not None:
                self._metrics.fanout_dropped.inc(relay_.dropped)
                relay_.close()
            if acquired:
                with contextlib.suppress(Exception):  # an expired lease frees the call anyway
                    await self._leases.release(call_id)

    def _backing_off(self, call_id: str) -> bool:
        """Whether the call's session crashed and is not to be restarted yet (or ever)."""
        crashes = self._crashes.get(call_id)
        return crashes is not None and (crashes.given_up or time.monotonic() < crashes.retry_at)

    def _crashed(self, call_id: str, *, ended: bool, ran_for: float) -> None:
        """Back off before the call's next session (doubling per crash, unless the session ran a while:
        then it is a new failure, not the same one again); after the call ended, give up (no loop
        forever)."""
        crashes = self._crashes.setdefault(call_id, _Crashes())
        if ran_for >= HEALTHY_SECONDS:
            crashes.count = 0
        crashes.count += 1
        crashes.retry_at = time.monotonic() + min(
            CRASH_BACKOFF_CAP_SECONDS, CRASH_BACKOFF_SECONDS * 2 ** (crashes.count - 1)
        )
        if ended:
            crashes.after_end += 1
            crashes.given_up = crashes.after_end > MAX_CRASHES_AFTER_END
        if crashes.given_up:
            log.error("listen session keeps crashing after the call ended; giving up", call_id=call_id)

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self._maintain_interval)
            try:
                await self._renew()
                await self._resume_from_dead_processes_here()
                await self._adopt_unowned()
            except Exception as exc:  # the database may be briefly away; sessions keep recording
                log.warning("lease maintenance failed", error=type(exc).__name__)

    async def _renew(self) -> None:
        running = set(self._sessions)
        if not running:
            return
        kept = await self._leases.renew(running)
        for call_id in running - kept:
            session = self._sessions.get(call_id)
            if session is not None:
                log.warning("listen lease lost; another replica records the call now", call_id=call_id)
                session.stop()

    async def _resume_from_dead_processes_here(self) -> None:
        """Calls whose lease a dead process of this host holds: taken over now, not at expiry."""
        if self._closing:
            return
        for call_id in await self._leases.take_over_from_dead_processes_here():
            log.info("listen lease of a dead process of this host taken over", call_id=call_id)
            self.ensure_listening(call_id)

    async def _adopt_unowned(self) -> None:
        for call_id in await self._leases.unowned_calls():
            self.ensure_listening(call_id)

    async def close(self, timeout: float) -> None:
        """Stop accepting, ask every session to stop (handing calls over), wait, cancel the rest."""
        self._closing = True
        await self._maintainer.close()
        for session in list(self._sessions.values()):
            session.stop()
        if cancelled := await self._tasks.close(timeout):
            log.warning("listen sessions cancelled at shutdown", count=cancelled)
        await self._journal.close()
