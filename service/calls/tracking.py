"""Keeping the stored call in step with what Vapi says about it (its Call objects and webhooks)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.calls import status as call_status
from service.db.models import Call


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


def merge_vapi_call(call: Call, vapi_call: dict[str, Any]) -> None:
    """Copy what a Vapi Call object knows onto the stored call, never moving status backwards."""
    for attribute, key in (("type", "type"), ("assistant_id", "assistantId"), ("phone_number_id", "phoneNumberId")):
        if isinstance(vapi_call.get(key), str):
            setattr(call, attribute, vapi_call[key])
    customer = vapi_call.get("customer")
    if isinstance(customer, dict) and customer:
        call.customer = {**(call.customer or {}), **customer}
        if isinstance(customer.get("number"), str):
            call.customer_number = customer["number"]
    if not call.call_metadata:
        call.call_metadata = _metadata(vapi_call)
    monitor = vapi_call.get("monitor")
    if isinstance(monitor, dict):
        call.listen_url = monitor.get("listenUrl") or call.listen_url
        call.control_url = monitor.get("controlUrl") or call.control_url
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


async def lock_or_create_call(session: AsyncSession, call_id: str, *, origin: str) -> tuple[Call, bool]:
    """The call row, locked for this transaction, created (empty) if it did not exist.

    ``INSERT … ON CONFLICT DO NOTHING`` makes concurrent first sightings (the API's own insert racing
    the call's first webhook) converge on one row instead of failing.
    """
    dialect = session.bind.dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    statement = insert(Call).values(id=call_id, origin=origin, status="queued").on_conflict_do_nothing()
    result = await session.execute(statement)
    created = bool(result.rowcount)  # type: ignore[attr-defined]  # a CursorResult for inserts
    query = select(Call).where(Call.id == call_id).execution_options(populate_existing=True)
    if dialect == "postgresql":
        query = query.with_for_update()
    call = (await session.scalars(query)).one()
    return call, created
