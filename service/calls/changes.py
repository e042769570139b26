"""The port through which committed call changes reach the rest of the service.

Every writer of calls and of their timelines (:class:`service.calls.writer.CallWriter` for Vapi's call
objects and server messages, the listen journal for text frames) describes what it wrote as
:class:`CallChange` values and hands them to :class:`CallChanges`. The slices that react to calls
subscribe to it — the outbox (outbound webhooks), the rule engine, the listen supervisor — so the
writers import none of them, and data flows one way: writer → changes → subscribers.

A subscriber is called twice per change, in two phases:

1. :meth:`CallSubscriber.stage`, inside the writer's transaction, before its commit: it may write in
   that transaction (an outbox row, a firing row, a lease), so that what it decides commits or rolls
   back with the change itself. It must not do I/O outside the transaction.
2. what ``stage`` returned (an :data:`AfterCommit` callback), once the transaction committed: queue
   work, wake a task, start a session. Never blocks, never raises into the writer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from service.calls.events import StoredEvent
from service.db.models import Call

log = structlog.get_logger(__name__)

Origin = Literal["webhook", "api", "import", "reconcile", "listen", "analytics"]
AfterCommit = Callable[[], None]


@dataclass(frozen=True, slots=True)
class CallChange:
    """One call's change in one transaction: what was appended to its timeline and how its status moved."""

    call_id: str
    origin: Origin
    events: Sequence[StoredEvent]
    # The call as the transaction leaves it; None when the writer appended events without reading the
    # call (the listen journal's text frames).
    call: Call | None = None
    # The status before the change; None when the call was first stored by this change.
    previous_status: str | None = None

    @property
    def first_sighting(self) -> bool:
        return self.call is not None and self.previous_status is None

    @property
    def status_changed(self) -> bool:
        return self.call is not None and self.call.status != self.previous_status


class CallSubscriber(Protocol):
    """A slice that reacts to committed call changes (see the module docstring for the two phases)."""

    async def stage(self, session: AsyncSession, change: CallChange) -> AfterCommit | None: ...


class CallChanges:
    """The publisher: subscribers in the order they subscribed, each staged per change."""

    def __init__(self) -> None:
        self._subscribers: list[CallSubscriber] = []

    def subscribe(self, subscriber: CallSubscriber) -> None:
        self._subscribers.append(subscriber)

    async def stage(self, session: AsyncSession, changes: Sequence[CallChange]) -> list[AfterCommit]:
        """Run every subscriber's transactional part for ``changes``; the callbacks for after the commit."""
        after: list[AfterCommit] = []
        for change in changes:
            for subscriber in self._subscribers:
                callback = await subscriber.stage(session, change)
                if callback is not None:
                    after.append(callback)
        return after

    @staticmethod
    def committed(callbacks: Sequence[AfterCommit]) -> None:
        """Run the after-commit callbacks of a committed transaction; one failing never stops the rest."""
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("after-commit callback failed")
