"""Placing, reading and controlling calls. One method, one unit of work."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgspec
import structlog
from sqlalchemy import ColumnElement, Select, and_, exists, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased, selectinload

from service.calls import status as call_status
from service.calls.events import NewEvent, append_events, list_events
from service.calls.metadata import METADATA_KEY, candidates
from service.calls.redact import redact
from service.calls.rows import CallRows
from service.calls.schemas import CallCreate, ControlIn, SayIn
from service.calls.tracking import announce_status, merge_vapi_call
from service.db.engine import Database
from service.db.models import Call, CallEvent, CallMetadata, Injection, utcnow
from service.deliveries.outbox import enqueue
from service.errors import BadRequestError, ConflictError, DomainError, InvalidInputError, NotFoundError, UpstreamError
from service.pagination import (
    BAD_CURSOR,
    decode_cursor,
    decode_newest_first,
    encode_cursor,
    encode_newest_first,
)
from service.settings import Settings
from service.vapi.client import ControlNotDeliveredError, VapiClient
from service.vapi.messages import FINAL_TRANSCRIPTS, SWITCHBOARD_SERVER_MESSAGES

if TYPE_CHECKING:
    from service.listen.supervisor import ListenSupervisor

log = structlog.get_logger(__name__)

# What Switchboard itself needs to track calls and run rules (besides final transcripts).
REQUIRED_SERVER_MESSAGES = ("status-update", "end-of-call-report", "speech-update", "hang")
# First pause before retrying a control POST whose connection was refused (doubles per attempt).
CONTROL_RETRY_SECONDS = 0.1
# What the caller of ``inject`` records in the injection's transaction (rules: the firing's outcome).
Journal = Callable[[AsyncSession, Injection], Awaitable[list[NewEvent]]]


def build_vapi_request(body: CallCreate, settings: Settings) -> dict[str, Any]:
    """The ``POST /call`` body: the caller's request plus what Switchboard needs from the call."""
    overrides = dict(body.assistant_overrides)
    overrides["monitorPlan"] = {
        **(overrides.get("monitorPlan") or {}),
        "listenEnabled": True,
        "controlEnabled": True,
    }
    if body.metadata:
        overrides["metadata"] = {**(overrides.get("metadata") or {}), **body.metadata}
    if settings.webhook_url:
        server = {**(overrides.get("server") or {}), "url": settings.webhook_url}
        if settings.webhook_secret is not None:
            server["headers"] = {
                **(server.get("headers") or {}),
                settings.webhook_secret_header: settings.webhook_secret.get_secret_value(),
            }
        overrides["server"] = server
        messages = list(overrides.get("serverMessages") or SWITCHBOARD_SERVER_MESSAGES)
        messages += [message for message in REQUIRED_SERVER_MESSAGES if message not in messages]
        if "transcript" not in messages and FINAL_TRANSCRIPTS not in messages:
            messages.append(FINAL_TRANSCRIPTS)
        overrides["serverMessages"] = messages
    return {
        "assistantId": body.assistant_id,
        "phoneNumberId": body.phone_number_id,
        "customer": msgspec.to_builtins(body.customer),
        "assistantOverrides": overrides,
    }


@dataclass(frozen=True, slots=True)
class CallFilters:
    status: str | None = None
    assistant_id: str | None = None
    customer_number: str | None = None
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # A naive time cannot be compared with stored (UTC) times: say so instead of guessing a zone.
        for name, value in (("createdAfter", self.created_after), ("createdBefore", self.created_before)):
            if value is not None and value.tzinfo is None:
                raise BadRequestError(f"{name} needs a time zone, e.g. 2025-01-31T09:00:00Z or …+01:00")

    def apply(self, query: Select[Any]) -> Select[Any]:
        """The filters as WHERE clauses on a query that selects from ``call``."""
        return self._apply(query, Call.created_at, Call.id, dict(self.metadata))

    def newest_first_calls(self) -> tuple[Select[tuple[Call]], NewestFirst]:
        """``SELECT call`` with the filters, and the ``(created_at, id)`` columns to sort and page on.

        With a metadata filter, the query starts from that filter's range of ``ix_call_metadata_key_value``
        (already newest first: a page reads about ``limit`` index entries, however many calls match) and
        sorts and pages on its columns; further metadata filters are EXISTS probes on the primary key.
        """
        query = select(Call)
        if not self.metadata:
            return self._apply(query, Call.created_at, Call.id, {}), (Call.created_at, Call.id)
        (key, value), *rest = self.metadata.items()
        first = aliased(CallMetadata)
        query = query.join(first, first.call_id == Call.id).where(first.key == key, _value_matches(first, value))
        # The other filters probe first.call_id: checked before the call row is read.
        return self._apply(query, first.created_at, first.call_id, dict(rest)), (first.created_at, first.call_id)

    def page(self, *, limit: int, cursor: str | None) -> Select[tuple[Call]]:
        """The calls matching the filters, newest first, after ``cursor``: at most ``limit``."""
        query, (created_at_column, id_column) = self.newest_first_calls()
        if cursor:
            created_at, call_id = decode_newest_first(cursor)
            query = query.where(tuple_(created_at_column, id_column) < (created_at, call_id))
        return query.order_by(created_at_column.desc(), id_column.desc()).limit(limit)

    def _apply(
        self, query: Select[Any], created_at: SortColumn, call_id: SortColumn, metadata: dict[str, str]
    ) -> Select[Any]:
        if self.status:
            query = query.where(Call.status == self.status)
        if self.assistant_id:
            query = query.where(Call.assistant_id == self.assistant_id)
        if self.customer_number:
            query = query.where(Call.customer_number == self.customer_number)
        if self.created_after:
            query = query.where(created_at >= self.created_after)
        if self.created_before:
            query = query.where(created_at < self.created_before)
        for key, value in metadata.items():
            query = query.where(metadata_matches(key, value, call_id))
        return query


SortColumn = InstrumentedAttribute[Any] | ColumnElement[Any]
NewestFirst = tuple[SortColumn, SortColumn]


def _value_matches(row: type[CallMetadata], value: str) -> ColumnElement[bool]:
    """The ``call_metadata`` row holds a value that ``metadata.<key>=value`` matches (see ``candidates``)."""
    found = candidates(value)
    values = {stored for stored, _ in found}
    if len(values) == 1:  # the usual case, even for numbers ("42"): one index equality
        return and_(row.value == values.pop(), row.kind.in_([kind for _, kind in found]))
    return or_(*(and_(row.value == stored, row.kind == kind) for stored, kind in found))


def metadata_matches(key: str, value: str, call_id: SortColumn) -> ColumnElement[bool]:
    """The call ``call_id``'s ``metadata.<key>`` matches ``value``: a string equal to it, or a number or
    boolean equal to it read as JSON (``42`` matches both ``"42"`` and ``42``). A primary-key lookup in
    ``call_metadata``."""
    row = aliased(CallMetadata)
    probe = select(row.call_id).where(row.call_id == call_id, row.key == key, _value_matches(row, value))
    # OFFSET 0 keeps PostgreSQL from turning the probe into a join: with statistics, it would hash every
    # call matching each filter (tens of thousands of rows) instead of probing a page's worth.
    return exists(probe.offset(0))


def metadata_filters(query_params: Mapping[str, str]) -> dict[str, str]:
    """``metadata.<key>=<value>`` query parameters as ``{key: value}``."""
    filters = {}
    for name, value in query_params.items():
        if name.startswith("metadata."):
            key = name.removeprefix("metadata.")
            if not METADATA_KEY.fullmatch(key):
                raise InvalidInputError(
                    f"bad metadata filter {name!r}: use metadata.<key>=<value>, the key made of letters, "
                    "digits, - and _ (at most 100)"
                )
            filters[key] = value
    return filters


class CallService:
    """Everything the calls API does; controllers call exactly one method each."""

    def __init__(self, db: Database, vapi: VapiClient, settings: Settings, supervisor: ListenSupervisor) -> None:
        self._db = db
        self._vapi = vapi
        self._settings = settings
        self._supervisor = supervisor

    async def place_call(self, body: CallCreate) -> Call:
        """Create the call at Vapi, then track it. Vapi failing means nothing is written here.

        Returns the call as this transaction committed it, without its recording (the listen session
        creates that after the commit; ``GET /v1/calls/{id}`` shows it)."""
        vapi_call = await self._vapi.create_call(build_vapi_request(body, self._settings))
        async with self._db.write() as session:
            rows = CallRows(session)
            call = await rows.lock_one(vapi_call["id"], origin="api")
            before = None if call.id in rows.created else call.status
            merge_vapi_call(call, vapi_call)
            call.origin = "api"
            call.customer = {**call.customer, **msgspec.to_builtins(body.customer)}
            call.customer_number = body.customer.number
            call.call_metadata = dict(body.metadata)
            rows.append(call, [NewEvent("switchboard", "call.created", redact(vapi_call))])
            await announce_status(session, call, before)
            # Lease it now: the listen session connects without waiting for a write of its own, so the
            # first seconds of audio are not lost behind other writes when many calls start at once.
            listen_now = bool(call.listen_url) and call_status.is_live(call.status) and call.listen_owner is None
            if listen_now:
                self._supervisor.claim(call)
            await rows.save()
        log.info("call placed", call_id=call.id, status=call.status)
        if listen_now:
            self._supervisor.ensure_listening(call.id, claimed=call)
        # The call as committed (no read back): a call placed a moment ago has no recording yet.
        return call

    async def get_call(self, call_id: str) -> Call:
        async with self._db.read() as session:
            call = await session.scalar(select(Call).where(Call.id == call_id).options(selectinload(Call.recording)))
        if call is None:
            raise NotFoundError(f"no call with id {call_id!r}")
        return call

    async def list_calls(
        self, filters: CallFilters, *, limit: int, cursor: str | None
    ) -> tuple[list[Call], str | None]:
        """Newest first, keyset-paginated on ``(created_at, id)``."""
        query = filters.page(limit=limit + 1, cursor=cursor).options(selectinload(Call.recording))
        async with self._db.read() as session:
            calls = list((await session.scalars(query)).all())
        next_cursor = None
        if len(calls) > limit:
            calls = calls[:limit]
            last = calls[-1]
            next_cursor = encode_newest_first(last.created_at, last.id)
        return calls, next_cursor

    async def list_events(
        self,
        call_id: str,
        *,
        after_seq: int,
        limit: int,
        types: Sequence[str],
        source: str | None,
        cursor: str | None,
    ) -> tuple[list[CallEvent], str | None]:
        if cursor:
            parts = decode_cursor(cursor)
            if not parts or not isinstance(parts[0], int):
                raise InvalidInputError(BAD_CURSOR)
            after_seq = max(after_seq, parts[0])
        async with self._db.read() as session:
            await self._require_call(session, call_id)
            events = await list_events(
                session, call_id, after_seq=after_seq, limit=limit + 1, types=types, source=source
            )
        next_cursor = None
        if len(events) > limit:
            events = events[:limit]
            next_cursor = encode_cursor(events[-1].seq)
        return events, next_cursor

    async def reconcile(self, call_id: str) -> str:
        """Bring the stored call in line with Vapi's ``GET /call/{id}`` (webhooks can be lost); its status."""
        vapi_call = await self._vapi.get_call(call_id)
        async with self._db.write() as session:
            rows = CallRows(session)
            call = await rows.lock_one(call_id, origin="import")
            before = call.status
            merge_vapi_call(call, vapi_call)
            await announce_status(session, call, None if call_id in rows.created else before)
            if call.status != before:
                rows.append(call, [NewEvent("switchboard", "call.reconciled", {"from": before, "to": call.status})])
            await rows.save()
            status = call.status
        if status == "ended":
            self._supervisor.call_ended(call_id)
        return status

    async def import_call(self, vapi_call_id: str) -> Call:
        """Track a call placed elsewhere: fetch it from Vapi and listen to it if it is live."""
        try:
            vapi_call = await self._vapi.get_call(vapi_call_id)
        except UpstreamError as exc:
            if exc.extra.get("vapiStatus") == 404:
                raise NotFoundError(f"Vapi has no call with id {vapi_call_id!r}") from None
            raise
        async with self._db.write() as session:
            rows = CallRows(session)
            call = await rows.lock_one(vapi_call["id"], origin="import")
            created = call.id in rows.created
            before = None if created else call.status
            merge_vapi_call(call, vapi_call)
            await announce_status(session, call, before)
            kind = "call.imported" if created else "call.refreshed"
            rows.append(call, [NewEvent("switchboard", kind, redact(vapi_call))])
            await rows.save()
        if call.listen_url and call_status.is_live(call.status):
            self._supervisor.ensure_listening(call.id)
        return await self.get_call(call.id)

    async def say(self, call_id: str, body: SayIn) -> Injection:
        """Post a ``say`` to the live call and journal it; a refused POST is stored as ``failed``."""
        return await self.inject(call_id, {"type": "say", **msgspec.to_builtins(body)}, origin="api")

    async def control(self, call_id: str, body: ControlIn) -> Injection:
        """Any other control message (add-message, control, end-call, transfer, append-context)."""
        return await self.inject(call_id, msgspec.to_builtins(body), origin="api")

    async def inject(
        self,
        call_id: str,
        message: dict[str, Any],
        *,
        origin: str,
        attempts: int = 1,
        journal: Journal | None = None,
        call: Call | None = None,
    ) -> Injection:
        """POST a control message to the live call and journal it (``Injection`` + timeline event).

        With ``attempts`` > 1 (rules), only a refused connection is retried, briefly: that request surely
        did not arrive. Any other failure is final, because control messages are not idempotent.
        ``journal`` (rules) records the caller's own outcome in the same transaction and returns the
        timeline events to append with the injection's; ``call`` (rules) is the row the caller has just
        read or committed, which saves a read on the latency-critical path.
        """
        if call is None or call.id != call_id:
            async with self._db.read() as session:
                call = await self._require_call(session, call_id)
        if not call_status.is_live(call.status) or not call.control_url:
            raise ConflictError(f"call {call_id!r} is not live (status {call.status}); nothing was sent")
        error: str | None = None
        for attempt in range(max(1, attempts)):  # retry of refused connections: added for rules
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
        async with self._db.write() as session:
            injection = Injection(
                call_id=call_id,
                origin=origin,
                type=message["type"],
                body=message,
                status="failed" if error else "sent",
                sent_at=None if error else utcnow(),
                error=error,
            )
            session.add(injection)
            await session.flush()
            event_type = "injection.failed" if error else "injection.sent"
            payload = {"injectionId": str(injection.id), "message": message, "error": error}
            events = [NewEvent("switchboard", event_type, payload)]
            if journal is not None:  # rules: the firing's outcome, in the same transaction
                events += await journal(session, injection)
            await append_events(session, call_id, events)
            if error:
                await enqueue(session, "injection.failed", {"callId": call_id, "origin": origin, **payload})
        log.info(
            "control message sent" if not error else "control message failed", call_id=call_id, type=message["type"]
        )
        return injection

    async def _require_call(self, session: AsyncSession, call_id: str) -> Call:
        call = await session.get(Call, call_id)
        if call is None:
            raise NotFoundError(f"no call with id {call_id!r}")
        return call
