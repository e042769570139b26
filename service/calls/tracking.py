"""Keeping the stored call in step with what Vapi says about it (its Call objects and server messages).

Pure functions on a :class:`~service.db.models.Call`; :class:`service.calls.writer.CallWriter` runs them
inside its unit of work."""

from __future__ import annotations

import datetime as dt
from typing import Any

from service.calls import status as call_status
from service.calls.compact import timeline_message
from service.calls.events import NewEvent
from service.calls.redact import redact
from service.calls.report import merge_report
from service.db.models import Call
from service.vapi.messages import base_type


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


def _monitor_plan(*holders: Any) -> dict[str, Any]:
    """The first ``monitorPlan`` among ``holders`` (overrides before the assistant they override)."""
    for holder in holders:
        if isinstance(holder, dict) and isinstance(holder.get("monitorPlan"), dict):
            plan: dict[str, Any] = holder["monitorPlan"]
            return plan
    return {}


def _metadata(vapi_call: dict[str, Any]) -> dict[str, Any]:
    for holder in (vapi_call, vapi_call.get("assistantOverrides")):
        if isinstance(holder, dict) and isinstance(holder.get("metadata"), dict):
            return dict(holder["metadata"])
    return {}


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
    _apply_monitor_plan(call, _monitor_plan(vapi_call.get("assistantOverrides"), vapi_call.get("assistant")))
    if isinstance(vapi_call.get("status"), str):
        apply_status(call, vapi_call["status"], at=None)
    if isinstance(vapi_call.get("endedReason"), str):
        call.ended_reason = vapi_call["endedReason"]
    call.started_at = call.started_at or parse_timestamp(vapi_call.get("startedAt"))
    call.ended_at = call.ended_at or parse_timestamp(vapi_call.get("endedAt"))
    call.vapi_created_at = call.vapi_created_at or parse_timestamp(vapi_call.get("createdAt"))
    merge_report(call, vapi_call, written_at=parse_timestamp(vapi_call.get("updatedAt")))


def _apply_monitor_plan(call: Call, plan: dict[str, Any]) -> None:
    """Whether the call's listen socket and control URL need the public key, as far as ``plan`` says."""
    if plan:
        call.listen_auth = bool(plan.get("listenAuthenticationEnabled", call.listen_auth))
        call.control_auth = bool(plan.get("controlAuthenticationEnabled", call.control_auth))


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


def apply_message(
    call: Call,
    message: dict[str, Any],
    vapi_call: dict[str, Any],
    at: dt.datetime | None,
    key: str,
    *,
    original: bytes | None = None,
) -> list[NewEvent]:
    """Apply one server message to its call; the timeline events it produces (``key``: its dedupe key,
    ``original``: its raw body). A qualified type (``transcript[transcriptType="final"]``) is stored as
    its base type, so that rules, the console and filters see one ``transcript``."""
    kind = base_type(message["type"])
    before = call.status
    merge_vapi_call(call, vapi_call)
    # Vapi may report the plan on the message's assistant only (an inbound call, an assistant-request).
    _apply_monitor_plan(call, _monitor_plan(message.get("assistantOverrides"), message.get("assistant")))
    if kind == "status-update" and isinstance(message.get("status"), str):
        apply_status(call, message["status"], at=at)
    if kind in ("status-update", "end-of-call-report") and isinstance(message.get("endedReason"), str):
        call.ended_reason = message["endedReason"]
    if kind == "end-of-call-report":
        apply_status(call, "ended", at=parse_timestamp(message.get("endedAt")) or at)
        call.started_at = call.started_at or parse_timestamp(message.get("startedAt"))
        written_at = parse_timestamp(message.get("timestamp")) or parse_timestamp(message.get("endedAt")) or at
        merge_report(call, message, written_at=written_at)
    stored = timeline_message(message, status_changed=call.status != before)  # the call object once, not per event
    events = [NewEvent("vapi", kind, redact(stored), at, dedupe_key=key, original=original)]
    if call.status != before:
        events.append(NewEvent("switchboard", "call.status_changed", {"from": before, "to": call.status}, at))
    return events
