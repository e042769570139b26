"""The owner of every listen session: one named task per live call, bounded, accounted for at shutdown.

Modelled on aiojobs' scheduler and Litestar's channels plugin: spawn with a limit, failures always
reach a handler (logged, journalled, counted), ``close()`` refuses new work, asks sessions to stop,
waits within a timeout, cancels the rest and awaits everything.

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

import structlog

from service.calls import status as call_status
from service.db.models import Call
from service.listen.journal import EventJournal
from service.listen.leases import LeaseKeeper
from service.listen.relay import LiveRelay
from service.listen.session import CallTarget, ListenSession
from service.metrics import Metrics
from service.tasks import finish

log = structlog.get_logger(__name__)

SessionFactory = Callable[[str, LiveRelay], ListenSession]
CRASH_BACKOFF_SECONDS = 2.0  # doubled per crash of the same call, up to the cap
CRASH_BACKOFF_CAP_SECONDS = 300.0
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
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._crashes: dict[str, _Crashes] = {}  # in memory: a restart retries, still with backoff
        self._maintainer: asyncio.Task[None] | None = None
        self._closing = False
        self.journal = EventJournal(leases.db)  # one writer for every session's events
        metrics.track_active_sessions(lambda: len(self._tasks))

    @property
    def active(self) -> int:
        return len(self._tasks)

    def relay(self, call_id: str) -> LiveRelay | None:
        """The live relay of a call recorded by this replica."""
        return self._relays.get(call_id)

    async def start(self) -> None:
        """Adopt calls left live (restart) and keep leases renewed from now on."""
        await self._adopt_unowned()
        self._maintainer = asyncio.create_task(self._maintain(), name="listen-maintainer")

    def claim(self, call: Call) -> None:
        """Lease a call in the caller's transaction; once it committed, call ``ensure_listening(call.id,
        claimed=call)``."""
        self._leases.claim(call)

    def ensure_listening(self, call_id: str, *, claimed: Call | None = None) -> None:
        """Start a session for the call unless one runs here (idempotent); it runs only under a lease.

        ``claimed``: the call as committed with the lease taken by :meth:`claim`; the session connects
        from it at once instead of reading the call back first (the first seconds of audio are at stake
        when many calls start)."""
        if self._closing or call_id in self._tasks:
            return
        crashes = self._crashes.get(call_id)
        if crashes is not None and (crashes.given_up or time.monotonic() < crashes.retry_at):
            return  # a crash loop backs off (and ends once the call has ended)
        if len(self._tasks) >= self._limit:
            log.error("listen session limit reached; call left to other replicas", call_id=call_id, limit=self._limit)
            return
        target = None
        if claimed is not None and claimed.listen_url:
            answered = claimed.status in call_status.ANSWERED
            target = CallTarget(claimed.listen_url, bool(claimed.listen_auth), answered)
        leased = claimed is not None
        self._tasks[call_id] = asyncio.create_task(self._run(call_id, leased, target), name=f"listen:{call_id}")

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
        try:
            acquired = acquired or await self._leases.acquire(call_id)
            if not acquired or self._closing:
                return
            relay = LiveRelay()
            session = self._session_factory(call_id, relay)
            session.journal, session.target = self.journal, target
            self._sessions[call_id], self._relays[call_id] = session, relay
            await session.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # One session's crash never touches another: reported (the session journals it too), slot freed.
            log.exception("listen session crashed", call_id=call_id)
            self._crashed(call_id, ended=session.ended if session is not None else False)
        else:
            self._crashes.pop(call_id, None)
        finally:
            self._sessions.pop(call_id, None)
            relay_ = self._relays.pop(call_id, None)
            if relay_ is not None:
                self._metrics.fanout_dropped.inc(relay_.dropped)
                relay_.close()
            self._tasks.pop(call_id, None)
            if acquired:
                with contextlib.suppress(Exception):  # an expired lease frees the call anyway
                    await self._leases.release(call_id)

    def _crashed(self, call_id: str, *, ended: bool) -> None:
        """Back off before the call's next session; after the call ended, give up (no loop forever)."""
        crashes = self._crashes.setdefault(call_id, _Crashes())
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

    async def _adopt_unowned(self) -> None:
        for call_id in await self._leases.unowned_calls():
            self.ensure_listening(call_id)

    async def close(self, timeout: float) -> None:
        """Stop accepting, ask every session to stop (handing calls over), wait, cancel the rest."""
        self._closing = True
        if self._maintainer is not None:
            self._maintainer.cancel()
            await asyncio.gather(self._maintainer, return_exceptions=True)
        for session in list(self._sessions.values()):
            session.stop()
        if cancelled := await finish(list(self._tasks.values()), timeout):
            log.warning("listen sessions cancelled at shutdown", count=cancelled)
        await self.journal.close()
