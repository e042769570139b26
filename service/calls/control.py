"""The control channel: POST a control message to a live call's controlUrl and record the injection.

Two parts, so that every sender owns its transaction: :meth:`ControlChannel.post` does the network
part (the call must be live; a refused connection may be retried briefly), :func:`record_injection`
writes the ``injection`` row and its timeline event inside the caller's transaction. The API uses
:meth:`ControlChannel.send` (both, the record in a transaction of its own); the rule engine posts, then
records the injection together with its firing's outcome in one transaction of its own.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from service.calls import status as call_status
from service.calls.events import NewEvent, append_events
from service.calls.speech import catch_up
from service.db.engine import Database
from service.db.models import Call, Injection, utcnow
from service.deliveries.outbox import enqueue
from service.errors import ConflictError, DomainError, NotFoundError
from service.vapi.client import ControlNotDeliveredError, VapiClient

log = structlog.get_logger(__name__)

# First pause before retrying a control POST whose connection was refused (doubles per attempt).
CONTROL_RETRY_SECONDS = 0.1


@dataclass(frozen=True, slots=True)
class Posted:
    """The outcome of one control POST: ``error`` is None when Vapi accepted the message."""

    call_id: str
    message: dict[str, Any]
    error: str | None
    started_at: dt.datetime = field(default_factory=utcnow)  # when the POST began (calls.speech.catch_up)


class ControlChannel:
    def __init__(self, db: Database, vapi: VapiClient) -> None:
        self._db = db
        self._vapi = vapi

    async def post(self, call: Call, message: dict[str, Any], *, attempts: int = 1) -> Posted:
        """POST ``message`` to the live call ``call``; :class:`ConflictError` when it is not live.

        With ``attempts`` > 1 (rules), only a refused connection is retried, briefly: that request surely
        did not arrive. Any other failure is final, because control messages are not idempotent.
        """
        if not call_status.is_live(call.status) or not call.control_url:
            raise ConflictError(f"call {call.id!r} is not live (status {call.status}); nothing was sent")
        error: str | None = None
        started_at = utcnow()
        for attempt in range(max(1, attempts)):
            try:
                await self._vapi.send_control(call.control_url, message, authenticated=call.control_auth)
                error = None
                break
            except ControlNotDeliveredError as exc:
                error = exc.detail
                if attempt + 1 < attempts:
                    await asyncio.sleep(CONTROL_RETRY_SECONDS * 2**attempt)
            except DomainError as exc:
                error = exc.detail
                break
        log.info("control message failed" if error else "control message sent", call_id=call.id, type=message["type"])
        return Posted(call.id, message, error, started_at)

    async def send(self, call_id: str, message: dict[str, Any], *, origin: str) -> Injection:
        """Post ``message`` to the call and journal it in a transaction of its own (the API's path)."""
        async with self._db.read() as session:
            call = await session.get(Call, call_id)
        if call is None:
            raise NotFoundError(f"no call with id {call_id!r}")
        posted = await self.post(call, message)
        async with self._db.write() as session:
            injection, event = await record_injection(session, posted, origin=origin)
            spoken = await catch_up(session, injection, since=posted.started_at)
            await append_events(session, call_id, [event] if spoken is None else [event, spoken])
        return injection


async def record_injection(session: AsyncSession, posted: Posted, *, origin: str) -> tuple[Injection, NewEvent]:
    """Store the injection of ``posted`` in the caller's transaction (and the outbound
    ``injection.failed`` event when it failed); its timeline event, for the caller to append with its own."""
    error = posted.error
    injection = Injection(
        call_id=posted.call_id,
        origin=origin,
        type=posted.message["type"],
        body=posted.message,
        status="failed" if error else "sent",
        sent_at=None if error else utcnow(),
        error=error,
    )
    session.add(injection)
    await session.flush()
    payload = {"injectionId": str(injection.id), "message": posted.message, "error": error}
    if error:
        await enqueue(session, "injection.failed", {"callId": posted.call_id, "origin": origin, **payload})
    return injection, NewEvent("switchboard", "injection.failed" if error else "injection.sent", payload)
