"""Keeping the stored call in step with what Vapi says about it (its Call objects and webhooks)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from service.calls import status as call_status
from service.db.models import Call
from service.deliveries.outbox import enqueue

log = structlog.get_logger(__name__)


def parse_timestamp(value: Any) -> dt.datetime | None:
    """Vapi timestamps: ISO 8601 strings (``2024-09-10T11:14:12.339Z``) or epoch milliseconds."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return None


def _monitor_plan(vapi_call: dict[str, Any]) -> dict[str, Any]:
    for holder in (vapi_call.get("assistantOverrides"), vapi_call.get("assistant")):
        if isinstance(holder, dict) and isinstance(holder.get("monitorPlan"), dict):
            plan: dict[str, Any] = holder["monitorPlan"]
            return plan
    return {}


def _metadata(vapi_call: dict[str, Any]) -> dict[str, Any]:
    for holder in (vapi_call, vapi_call.get("assistantOverrides")):
        if isinstance(holder, dict) and isinstance(holder.get("metadata"), dict):
            return dict(holder["metadata"])
    return {}


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


async def announce_status(session: AsyncSession, call: Call, before: str | None) -> None:
    """Outbound webhooks for a call first seen or moved to another status, in the caller's transaction."""
    if before is None:
        await enqueue(session, "call.created", call_summary(call))
    elif call.status != before:
        await enqueue(session, "call.status_changed", {**call_summary(call), "previousStatus": before})
    if call.status == "ended" and before != "ended":
        await enqueue(session, "call.ended", call_summary(call))
        _log_when_committed(session, ended_call_fields(call))


def _log_when_committed(session: AsyncSession, fields: dict[str, Any]) -> None:
    """``call ended`` once the transaction commits: a batch that is rolled back and applied again
    (webhooks) must not log the end twice, nor one that never happened."""

    def committed(_session: Session) -> None:
        log.info("call ended", **fields)

    event.listen(session.sync_session, "after_commit", committed, once=True)


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


def merge_vapi_call(call: Call, vapi_call: dict[str, Any]) -> None:
    """Copy what a Vapi Call object knows onto the stored call, never moving status backwards."""
    for attribute, key in (("type", "type"), ("assistant_id", "assistantId"), ("phone_number_id", "phoneNumberId")):
        if isinstance(vapi_call.get(key), str):
            setattr(call, attribute, vapi_call[key])
    customer = vapi_call.get("customer")
    if isinstance(customer, dict) and customer:
        merged = {**(call.customer or {}), **customer}
        if merged != call.customer:  # most messages repeat it: no UPDATE for nothing
            call.customer = merged
        if isinstance(customer.get("number"), str) and customer["number"] != call.customer_number:
            call.customer_number = customer["number"]
    if not call.call_metadata:
        call.call_metadata = _metadata(vapi_call)
    monitor = vapi_call.get("monitor")
    if isinstance(monitor, dict):
        if monitor.get("listenUrl") and monitor["listenUrl"] != call.listen_url:
            call.listen_url = monitor["listenUrl"]
        if monitor.get("controlUrl") and monitor["controlUrl"] != call.control_url:
            call.control_url = monitor["controlUrl"]
    plan = _monitor_plan(vapi_call)
    if plan:
        call.listen_auth = bool(plan.get("listenAuthenticationEnabled", call.listen_auth))
        call.control_auth = bool(plan.get("controlAuthenticationEnabled", call.control_auth))
    if isinstance(vapi_call.get("status"), str):
        apply_status(call, vapi_call["status"], at=None)
    if isinstance(vapi_call.get("endedReason"), str):
        call.ended_reason = vapi_call["endedReason"]
    call.started_at = call.started_at or parse_timestamp(vapi_call.get("startedAt"))
    call.ended_at = call.ended_at or parse_timestamp(vapi_call.get("endedAt"))


def apply_status(call: Call, incoming: str, *, at: dt.datetime | None) -> bool:
    """Move the call to ``incoming`` if the state machine allows; returns whether it changed."""
    new = call_status.advance(call.status or "queued", incoming)
    if new == call.status:
        return False
    call.status = new
    if new in call_status.ANSWERED and call.started_at is None and at is not None:
        call.started_at = at
    if new == "ended" and call.ended_at is None and at is not None:
        call.ended_at = at
    return True
