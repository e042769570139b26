"""The tap's subscription to call changes: what the call's upstream would have received from Vapi is
queued for it in the webhook's own transaction (contract section 9, ``deliveries.forwards``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.calls.changes import AfterCommit, CallChange
from service.calls.upstream import subscription
from service.deliveries.forwards import enqueue_forward
from service.vapi.messages import REQUEST_TYPES, subscribed


class Forwarder:
    """Queues each stored server message the call's upstream subscribed to (its own ``serverMessages``,
    not the wider list Switchboard asked Vapi for). Messages that need an answer were relayed
    synchronously already and are not queued again."""

    def __init__(self, *, default_upstream: Mapping[str, Any] | None, wake: Callable[[], None]) -> None:
        self._default = default_upstream
        self._wake = wake

    async def stage(self, session: AsyncSession, change: CallChange) -> AfterCommit | None:
        if change.origin != "webhook" or change.call is None:
            return None
        upstream = change.call.upstream or self._default
        if upstream is None:
            return None
        wanted = subscription(upstream)
        queued = False
        for event in change.events:
            if event.source != "vapi" or event.original is None or event.type in REQUEST_TYPES:
                continue
            if subscribed(wanted, event.payload):
                enqueue_forward(
                    session, call_id=change.call_id, seq=event.seq, message_type=event.type, body=event.original
                )
                queued = True
        return self._wake if queued else None
