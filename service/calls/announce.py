"""Outbound webhooks about calls (``call.created``, ``call.status_changed``, ``call.ended``): the
outbox's subscription to call changes, enqueued in the transaction that made the change; and the
``call ended`` log line, written once that transaction committed (a batch rolled back and applied
again logs nothing twice, an end that never committed logs nothing)."""

from __future__ import annotations

from functools import partial
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from service.calls.changes import AfterCommit, CallChange
from service.db.models import Call
from service.deliveries.outbox import enqueue

log = structlog.get_logger(__name__)


def call_summary(call: Call) -> dict[str, Any]:
    """The call as outbound webhooks carry it (no monitor URLs: they are capabilities)."""
    return {
        "id": call.id,
        "status": call.status,
        "endedReason": call.ended_reason,
        "assistantId": call.assistant_id,
        "customer": call.customer or {},
        "metadata": call.call_metadata or {},
        "startedAt": call.started_at.isoformat() if call.started_at else None,
        "endedAt": call.ended_at.isoformat() if call.ended_at else None,
    }


class CallAnnouncer:
    """Subscribes the outbox to call changes: a call first seen or moved to another status."""

    async def stage(self, session: AsyncSession, change: CallChange) -> AfterCommit | None:
        call, before = change.call, change.previous_status
        if call is None:
            return None
        if before is None:
            await enqueue(session, "call.created", call_summary(call))
        elif call.status != before:
            await enqueue(session, "call.status_changed", {**call_summary(call), "previousStatus": before})
        if call.status == "ended" and before != "ended":
            await enqueue(session, "call.ended", call_summary(call))
            return partial(log.info, "call ended", **ended_call_fields(call))
        return None


def ended_call_fields(call: Call) -> dict[str, Any]:
    """What an operator wants to know of an ended call, as log fields."""
    talked = call.ended_at - call.started_at if call.started_at and call.ended_at else None
    return {
        "call_id": call.id,
        "ended_reason": call.ended_reason,
        "duration_seconds": round(talked.total_seconds(), 3) if talked is not None else None,
        "type": call.type,
        "assistant_id": call.assistant_id,
    }
