"""The owner of every listen session: one named task per live call, bounded, accounted for at shutdown.

Modelled on aiojobs' scheduler and Litestar's channels plugin: spawn with a limit, failures always
reach a handler (logged, journalled), ``close()`` refuses new work, asks sessions to stop, waits
within a timeout, cancels the rest and awaits everything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

from service.listen.session import ListenSession

log = structlog.get_logger(__name__)


class ListenSupervisor:
    def __init__(self, session_factory: Callable[[str], ListenSession], *, limit: int = 1000) -> None:
        self._session_factory = session_factory
        self._limit = limit
        self._sessions: dict[str, ListenSession] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._closing = False
        self.failures = 0

    @property
    def active(self) -> int:
        return len(self._tasks)

    def is_listening(self, call_id: str) -> bool:
        return call_id in self._tasks

    def ensure_listening(self, call_id: str) -> None:
        """Start a session for the call unless one is running (idempotent)."""
        if self._closing or call_id in self._tasks:
            return
        if len(self._tasks) >= self._limit:
            log.error("listen session limit reached; call not recorded", call_id=call_id, limit=self._limit)
            return
        session = self._session_factory(call_id)
        self._sessions[call_id] = session
        self._tasks[call_id] = asyncio.create_task(self._run(session), name=f"listen:{call_id}")

    def call_ended(self, call_id: str) -> None:
        session = self._sessions.get(call_id)
        if session is not None:
            session.call_ended()

    async def _run(self, session: ListenSession) -> None:
        try:
            await session.run()
        except asyncio.CancelledError:
            raise
        except Exception:
            # One session's crash never touches another; it is reported and its slot freed.
            self.failures += 1
            log.exception("listen session crashed", call_id=session.call_id)
        finally:
            self._sessions.pop(session.call_id, None)
            self._tasks.pop(session.call_id, None)

    async def wait_idle(self, call_id: str, timeout: float) -> None:
        """Wait for a call's session to finish (tests and graceful paths)."""
        task = self._tasks.get(call_id)
        if task is not None:
            async with asyncio.timeout(timeout):
                await asyncio.shield(task)

    async def close(self, timeout: float) -> None:
        """Stop accepting, ask every session to stop, wait up to ``timeout``, cancel the rest."""
        self._closing = True
        for session in list(self._sessions.values()):
            session.stop()
        tasks = list(self._tasks.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if pending:
            log.warning("listen sessions cancelled at shutdown", count=len(pending))
