"""Ingesting Vapi server messages: parse, store as an event, apply to the call, steer listening."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service.calls import status as call_status
from service.calls.events import NewEvent, append_events
from service.calls.redact import redact
from service.calls.tracking import apply_status, lock_or_create_call, merge_vapi_call, parse_timestamp
from service.db.engine import Database
from service.db.models import CallEvent
from service.errors import DomainError
from service.metrics import Metrics

if TYPE_CHECKING:
    from service.listen.supervisor import ListenSupervisor

log = structlog.get_logger(__name__)


class MalformedWebhookError(DomainError):
    status_code = 400
    slug = "malformed-webhook"
    title = "Malformed webhook"


@dataclass(frozen=True, slots=True)
class IngestResult:
    stored: bool
    call_id: str | None
    seq: int | None = None
    duplicate: bool = False


def dedupe_key(raw: bytes) -> str:
    """Duplicate deliveries of one server message (a retry by Vapi's backoff plan, a proxy replay)
    carry the same bytes; every distinct message differs at least in its ``timestamp``."""
    return hashlib.sha256(raw).hexdigest()[:32]


def parse_message(raw: bytes) -> dict[str, Any]:
    """The ``message`` object of a server message body, or :class:`MalformedWebhookError`."""
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise MalformedWebhookError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        raise MalformedWebhookError('expected a JSON object with a "message" object')
    message: dict[str, Any] = body["message"]
    if not isinstance(message.get("type"), str) or not message["type"]:
        raise MalformedWebhookError('"message.type" must be a non-empty string')
    call = message.get("call")
    if call is not None and not (isinstance(call, dict) and isinstance(call.get("id"), str)):
        raise MalformedWebhookError('"message.call" must be an object with a string "id"')
    return message


class WebhookService:
    """Applies one server message in one transaction, then tells the listen supervisor."""

    def __init__(self, db: Database, supervisor: ListenSupervisor, metrics: Metrics) -> None:
        self._db = db
        self._supervisor = supervisor
        self._metrics = metrics

    async def ingest(self, raw: bytes) -> IngestResult:
        message = parse_message(raw)
        kind: str = message["type"]
        self._metrics.webhooks.labels(type=kind).inc()
        vapi_call: dict[str, Any] | None = message.get("call")
        if vapi_call is None:
            # Messages not tied to a call (rare: phone-number level requests) have no timeline.
            log.info("webhook without a call ignored", type=kind)
            return IngestResult(stored=False, call_id=None)
        at = parse_timestamp(message.get("timestamp"))
        key = dedupe_key(raw)
        try:
            return await self._apply(message, vapi_call, at, key)
        except IntegrityError:
            # A concurrent duplicate won the race for the unique (call, dedupe key).
            return IngestResult(stored=False, call_id=vapi_call["id"], duplicate=True)

    async def _apply(
        self, message: dict[str, Any], vapi_call: dict[str, Any], at: dt.datetime | None, key: str
    ) -> IngestResult:
        kind: str = message["type"]
        async with self._db.write() as session:
            call, created = await lock_or_create_call(session, vapi_call["id"], origin="webhook")
            seen = await session.scalar(
                select(CallEvent.seq).where(CallEvent.call_id == call.id, CallEvent.dedupe_key == key)
            )
            if seen is not None:
                return IngestResult(stored=False, call_id=call.id, seq=seen, duplicate=True)
            before = call.status
            merge_vapi_call(call, vapi_call)
            if kind == "status-update" and isinstance(message.get("status"), str):
                apply_status(call, message["status"], at=at)
            if kind in ("status-update", "end-of-call-report") and isinstance(message.get("endedReason"), str):
                call.ended_reason = message["endedReason"]
            if kind == "end-of-call-report":
                apply_status(call, "ended", at=parse_timestamp(message.get("endedAt")) or at)
                call.started_at = call.started_at or parse_timestamp(message.get("startedAt"))
            events = [NewEvent("vapi", kind, redact(message), at, dedupe_key=key)]
            if call.status != before:
                events.append(NewEvent("switchboard", "call.status_changed", {"from": before, "to": call.status}, at))
            rows = await append_events(session, call.id, events)
            call_id, status, listen_url = call.id, call.status, call.listen_url
        if created:
            log.info("call tracked from webhook", call_id=call_id, status=status)
        if status == "ended":
            self._supervisor.call_ended(call_id)
        elif listen_url and call_status.is_live(status):
            self._supervisor.ensure_listening(call_id)
            if status in call_status.ANSWERED:
                self._supervisor.call_answered(call_id)
        return IngestResult(stored=True, call_id=call_id, seq=rows[0].seq)
