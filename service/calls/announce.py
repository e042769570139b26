"""Outbound webhooks about calls (``call.created``, ``call.status_changed``, ``call.ended``, ``call.report``,
``call.analyzed``): the
outbox's subscription to call changes, enqueued in the transaction that made the change; and the
``call ended`` log line, written once that transaction committed (a batch rolled back and applied
again logs nothing twice, an end that never committed logs nothing)."""

from __future__ import annotations

from functools import partial
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from service.calls.changes import AfterCommit, CallChange
from service.calls.report import summary
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


def call_report(call: Call) -> dict[str, Any]:
    """``call.report``: the call with what Vapi's end-of-call report says of it (contract section 10)."""
    return {
        **call_summary(call),
        "type": call.type,
        "phoneNumberId": call.phone_number_id,
        "endedMessage": call.ended_message,
        "cost": call.cost,
        "costs": call.costs or [],
        "summary": summary(call),
        "analysis": call.analysis or {},
        "structuredOutputs": call.structured_outputs or {},
        "phoneCallProvider": call.phone_call_provider,
        "phoneCallProviderId": call.phone_call_provider_id,
        "squadId": call.squad_id,
        "workflowId": call.workflow_id,
    }


def reported(change: CallChange) -> bool:
    """Whether the change stored Vapi's end-of-call report (a duplicate delivery is never stored twice)."""
    return any(event.source == "vapi" and event.type == "end-of-call-report" for event in change.events)


class CallAnnouncer:
    """Subscribes the outbox to call changes: a call first seen, moved to another status, or reported on."""

    async def stage(self, session: AsyncSession, change: CallChange) -> AfterCommit | None:
        call, before = change.call, change.previous_status
        if call is None:
            return None
        if before is None:
            await enqueue(session, "call.created", call_summary(call))
        elif call.status != before:
            await enqueue(session, "call.status_changed", {**call_summary(call), "previousStatus": before})
        after: AfterCommit | None = None
        if call.status == "ended" and before != "ended":
            await enqueue(session, "call.ended", call_summary(call))
            after = partial(log.info, "call ended", **ended_call_fields(call))
        if reported(change):  # after call.ended: the report follows the end (contract section 10)
            await enqueue(session, "call.report", call_report(call))
        for event in change.events:  # the conversation's analytics (contract section 13)
            if event.source == "switchboard" and event.type == "call.analyzed":
                await enqueue(session, "call.analyzed", {"callId": call.id, **event.payload})
        return after


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
