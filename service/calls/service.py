"""Placing, reading and controlling calls. One method, one unit of work."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import msgspec
import structlog
from sqlalchemy import ColumnElement, Integer, Select, and_, bindparam, exists, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute, aliased, selectinload

from service.calls.control import ControlChannel
from service.calls.events import NewEvent, list_events
from service.calls.metadata import METADATA_KEY, candidates
from service.calls.redact import redact
from service.calls.schemas import CallCreate
from service.calls.tracking import merge_vapi_call
from service.calls.upstream import UpstreamResolver, subscription
from service.calls.writer import CallWriter
from service.db.engine import Database, is_postgresql
from service.db.models import Call, CallAnalytics, CallEvent, CallMetadata, Injection, UpstreamForward
from service.deliveries.forwards import list_forwards
from service.errors import BadRequestError, InvalidInputError, InvalidQueryError, NotFoundError, UpstreamError
from service.fulltext.query import SearchQuery
from service.fulltext.sql import CallsSaying, plan_each_search, sqlite_batch_saying, sqlite_matches_many
from service.outbound_urls import UnsafeUrlError, check_webhook_url
from service.pagination import (
    BAD_CURSOR,
    decode_cursor,
    encode_cursor,
    keyset_page,
    newest_first,
    newest_first_after,
    newest_first_cursor,
    newest_first_position,
)
from service.settings import Settings
from service.vapi.client import VapiClient
from service.vapi.control import ControlRequest, SayFields
from service.vapi.messages import FINAL_TRANSCRIPTS, REQUEST_TYPES, SWITCHBOARD_SERVER_MESSAGES, base_type

log = structlog.get_logger(__name__)

# What Switchboard itself needs to track calls and run rules (besides final transcripts).
# ``assistant.speechStarted`` and ``user-interrupted`` tell whether a say was spoken (``calls.speech``),
# ``transfer-update`` that the call was transferred (the ``call.transferred`` milestone).
REQUIRED_SERVER_MESSAGES = (
    "status-update",
    "end-of-call-report",
    "speech-update",
    "hang",
    "assistant.speechStarted",
    "user-interrupted",
    "transfer-update",
)


def build_vapi_request(
    body: CallCreate, settings: Settings, upstream: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The ``POST /call`` body: the caller's request plus what Switchboard needs from the call.

    With a public URL, Vapi gets Switchboard's own server object; the caller's ``server`` (kept as the
    call's ``upstream``) never reaches Vapi. The call is subscribed to the upstream's messages (to
    forward them) and to what Switchboard needs, but to a message that needs an answer only when an
    upstream can give one (contract section 9)."""
    overrides = dict(body.assistant_overrides)
    overrides["monitorPlan"] = {
        **(overrides.get("monitorPlan") or {}),
        "listenEnabled": True,
        "controlEnabled": True,
    }
    if body.metadata:
        overrides["metadata"] = {**(overrides.get("metadata") or {}), **body.metadata}
    if settings.webhook_url:
        # The caller's server (kept as the upstream) must not reach Vapi, in either spelling.
        overrides.pop("serverUrl", None)
        overrides.pop("serverUrlSecret", None)
        overrides["server"] = switchboard_server(settings)
        overrides["serverMessages"] = switchboard_subscription(overrides.get("serverMessages"), upstream)
    return {
        "assistantId": body.assistant_id,
        "phoneNumberId": body.phone_number_id,
        "customer": msgspec.to_builtins(body.customer),
        "assistantOverrides": overrides,
    }


def switchboard_server(settings: Settings) -> dict[str, Any]:
    """Switchboard's ``server`` object for Vapi (vapi-server-sdk 3.0.0 ``Server``: url, headers,
    backoffPlan): Vapi retries a failed message, which the message identity stores once."""
    assert settings.webhook_url is not None
    server: dict[str, Any] = {"url": settings.webhook_url}
    if settings.webhook_secret is not None:
        server["headers"] = {settings.webhook_secret_header: settings.webhook_secret.get_secret_value()}
    if settings.webhook_backoff_max_retries:
        server["backoffPlan"] = {
            "type": "exponential",
            "maxRetries": settings.webhook_backoff_max_retries,
            "baseDelaySeconds": 1,
        }
    return server


def switchboard_subscription(requested: object, upstream: Mapping[str, Any] | None) -> list[str]:
    """The ``serverMessages`` Switchboard asks Vapi for: the upstream's own subscription (or the
    caller's list, or Switchboard's defaults), never a request without an upstream to answer it,
    plus what Switchboard needs itself."""
    if upstream is not None:
        messages = list(subscription(upstream))
    else:
        listed = requested if isinstance(requested, list) else SWITCHBOARD_SERVER_MESSAGES
        messages = [str(message) for message in listed if base_type(str(message)) not in REQUEST_TYPES]
    messages += [message for message in REQUIRED_SERVER_MESSAGES if message not in messages]
    if "transcript" not in messages and FINAL_TRANSCRIPTS not in messages:
        messages.append(FINAL_TRANSCRIPTS)
    return messages


# SQLite, GET /v1/calls?q= said often: how many calls a batch checks, at least and at most (one of 4,096
# calls takes ~15 ms at 2,000,000 utterances).
FIRST_BATCH, LAST_BATCH = 64, 4_096


@dataclass(frozen=True, slots=True)
class CallFilters:
    status: str | None = None
    assistant_id: str | None = None
    customer_number: str | None = None
    created_after: dt.datetime | None = None
    created_before: dt.datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    saying: SearchQuery | None = None  # ?q=: calls with an utterance that matches (transcript search)
    min_longest_silence_seconds: float | None = None  # analytics
    min_overlap_seconds: float | None = None  # analytics

    # Contract section 10; each has a list index ending with the sort key (migration 0012).
    ended_reason: str | None = None
    phone_number_id: str | None = None
    type: str | None = None

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
        return newest_first(query, created_at_column, id_column, cursor).limit(limit)

    async def resolved_page(self, session: AsyncSession, *, limit: int, cursor: str | None) -> Select[tuple[Call]]:
        """The statement of :meth:`page`, with what depends on the data decided: on SQLite, when ``q`` is
        said so often that checking the calls batch by batch is cheaper than listing its matches' calls,
        the page's calls are found first (:func:`sqlite_batch_saying`) and the statement reads them;
        PostgreSQL plans each search (``plan_each_search``)."""
        if self.saying is not None and is_postgresql(session):
            await plan_each_search(session)
        elif self.saying is not None and await sqlite_matches_many(session, self.saying):
            found = await self._calls_saying_batch_by_batch(session, self.saying, limit=limit, cursor=cursor)
            return newest_first(select(Call).where(Call.id.in_(found)), Call.created_at, Call.id, None)
        return self.page(limit=limit, cursor=cursor)

    async def _calls_saying_batch_by_batch(
        self, session: AsyncSession, saying: SearchQuery, *, limit: int, cursor: str | None
    ) -> list[str]:
        """The ids of the calls of :meth:`page` (``saying`` being the query): the calls matching the other
        filters, newest first after ``cursor``, checked batch by batch until ``limit`` of them said it or
        none is left."""
        query, (created_at, call_id) = replace(self, saying=None).newest_first_calls()
        # The batch is the sort key alone (maintain_column_froms: ``call`` stays the left side of a
        # metadata filter's join).
        keys = query.with_only_columns(call_id.label("id"), created_at.label("created_at"), maintain_column_froms=True)
        size = bindparam("batch_size", type_=Integer)

        def batches(after: ColumnElement[Any] | None) -> Select[Any]:
            return sqlite_batch_saying(newest_first_after(keys, created_at, call_id, after).limit(size), saying)

        # A statement run from each batch's position (building it costs as much as running it).
        after = tuple_(bindparam("after_created_at", type_=created_at.type), bindparam("after_id", type_=call_id.type))
        position: dict[str, Any] = {}
        if cursor:
            position = dict(zip(("after_created_at", "after_id"), newest_first_position(cursor), strict=True))
        statement = batches(after if cursor else None)
        found: list[str] = []
        # The first batch: twice the page (a query said in most calls fills it from there).
        wanted, checked = min(max(FIRST_BATCH, 2 * limit), LAST_BATCH), 0
        while True:
            rows = (await session.execute(statement, {"batch_size": wanted, **position})).all()
            found += [row.id for row in rows if row.said]
            if len(found) >= limit or not rows or rows[-1].checked < wanted:
                return found[:limit]
            if not position:  # the first batch started from the newest call
                statement = batches(after)
            position = {"after_created_at": rows[-1].created_at, "after_id": rows[-1].id}
            checked += wanted
            # What the rest of the page needs at the share of calls that said it so far (none counted as
            # one), a quarter more: at most four times the calls checked (the share of a small batch is
            # rough; checking too many costs more than another round), at least half as many (a query
            # said ever more rarely takes few rounds).
            needed = 5 * (limit - len(found)) * checked // (4 * max(len(found), 1))
            wanted = min(max(FIRST_BATCH, checked // 2, min(needed, 4 * checked)), LAST_BATCH)

    def _apply(
        self, query: Select[Any], created_at: SortColumn, call_id: SortColumn, metadata: dict[str, str]
    ) -> Select[Any]:
        if self.status:
            query = query.where(Call.status == self.status)
        if self.assistant_id:
            query = query.where(Call.assistant_id == self.assistant_id)
        if self.customer_number:
            query = query.where(Call.customer_number == self.customer_number)
        if self.ended_reason:
            query = query.where(Call.ended_reason == self.ended_reason)
        if self.phone_number_id:
            query = query.where(Call.phone_number_id == self.phone_number_id)
        if self.type:
            query = query.where(Call.type == self.type)
        if self.created_after:
            query = query.where(created_at >= self.created_after)
        if self.created_before:
            query = query.where(created_at < self.created_before)
        for key, value in metadata.items():
            query = query.where(metadata_matches(key, value, call_id))
        if self.saying is not None:
            query = query.where(CallsSaying(call_id, self.saying))
        if self.min_longest_silence_seconds is not None or self.min_overlap_seconds is not None:
            query = query.where(analysed(call_id, self.min_longest_silence_seconds, self.min_overlap_seconds))
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


def analysed(call_id: SortColumn, min_longest_silence: float | None, min_overlap: float | None) -> ColumnElement[bool]:
    """The call's analytics are completed and reach these minimums: a primary-key probe."""
    probe = select(CallAnalytics.call_id).where(CallAnalytics.call_id == call_id, CallAnalytics.status == "completed")
    if min_longest_silence is not None:
        probe = probe.where(CallAnalytics.longest_silence_seconds >= min_longest_silence)
    if min_overlap is not None:
        probe = probe.where(CallAnalytics.overlap_seconds >= min_overlap)
    return exists(probe.offset(0))  # OFFSET 0: a probe per page row, not a join (as metadata_matches)


def calls_with_metadata(key: str, value: str) -> Select[tuple[str]]:
    """The ids of the calls whose ``metadata.<key>`` matches ``value`` (as :func:`metadata_matches`): a
    range of ``ix_call_metadata_key_value``, for ``IN``: read once, then probed per row in memory."""
    return select(CallMetadata.call_id).where(CallMetadata.key == key, _value_matches(CallMetadata, value))


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

    def __init__(
        self, db: Database, writer: CallWriter, control: ControlChannel, vapi: VapiClient, settings: Settings
    ) -> None:
        self._db = db
        self._writer = writer
        self._control = control
        self._vapi = vapi
        self._settings = settings
        self._upstreams = UpstreamResolver(vapi, settings)

    async def place_call(self, body: CallCreate) -> Call:
        """Create the call at Vapi, then track it. Vapi failing means nothing is written here.

        Returns the call as this transaction committed it, without its recording (the listen session
        creates that after the commit; ``GET /v1/calls/{id}`` shows it)."""
        upstream = None
        if self._settings.webhook_url:  # else Vapi keeps sending to the customer's server: nothing to stand in for
            upstream = await self._upstreams.for_outbound(
                body.assistant_overrides, assistant_id=body.assistant_id, phone_number_id=body.phone_number_id
            )
        if upstream is not None and upstream["source"] == "call":
            # The caller chose where Switchboard will POST: the outbound webhooks' address checks apply.
            try:
                await check_webhook_url(upstream["url"], allow_private=self._settings.webhook_allow_private)
            except UnsafeUrlError as exc:
                raise InvalidInputError(f"assistantOverrides.server.url: {exc}") from None
        vapi_call = await self._vapi.create_call(build_vapi_request(body, self._settings, upstream))
        async with self._writer.transaction() as unit:
            call = await unit.lock_one(vapi_call["id"], origin="api")
            before = unit.status_before(call)
            merge_vapi_call(call, vapi_call)
            call.origin = "api"
            call.upstream = upstream
            call.customer = {**call.customer, **msgspec.to_builtins(body.customer)}
            call.customer_number = body.customer.number
            call.call_metadata = dict(body.metadata)
            events = [NewEvent("switchboard", "call.created", redact(vapi_call))]
            unit.record(call, events, origin="api", previous_status=before)
        log.info("call placed", call_id=call.id, status=call.status)
        # The call as committed (no read back): a call placed a moment ago has no recording yet.
        return call

    async def get_call(self, call_id: str) -> Call:
        async with self._db.read() as session:
            call = await session.scalar(
                select(Call)
                .where(Call.id == call_id)
                .options(selectinload(Call.recording), selectinload(Call.analytics))
            )
        if call is None:
            raise NotFoundError(f"no call with id {call_id!r}")
        return call

    async def list_calls(
        self, filters: CallFilters, *, limit: int, cursor: str | None
    ) -> tuple[list[Call], str | None]:
        """Newest first, keyset-paginated on ``(created_at, id)``."""
        async with self._db.read() as session:
            query = (await filters.resolved_page(session, limit=limit + 1, cursor=cursor)).options(
                selectinload(Call.recording), selectinload(Call.analytics)
            )
            calls = (await session.scalars(query)).all()
        return keyset_page(calls, limit, newest_first_cursor)

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
                raise InvalidQueryError(BAD_CURSOR)
            after_seq = max(after_seq, parts[0])
        async with self._db.read() as session:
            await self._require_call(session, call_id)
            events = await list_events(
                session, call_id, after_seq=after_seq, limit=limit + 1, types=types, source=source
            )
        return keyset_page(events, limit, lambda event: encode_cursor(event.seq))

    async def list_forwards(self, call_id: str, *, limit: int) -> list[UpstreamForward]:
        """The call's forwards to its upstream, oldest first."""
        async with self._db.read() as session:
            await self._require_call(session, call_id)
            return await list_forwards(session, call_id, limit=limit)

    async def reconcile(self, call_id: str) -> str:
        """Bring the stored call in line with Vapi's ``GET /call/{id}`` (webhooks can be lost); its status."""
        vapi_call = await self._vapi.get_call(call_id)
        async with self._writer.transaction() as unit:
            call = await unit.lock_one(call_id, origin="import")
            before = unit.status_before(call)
            stored_status = call.status
            merge_vapi_call(call, vapi_call)
            events = []
            if call.status != stored_status:
                events.append(NewEvent("switchboard", "call.reconciled", {"from": stored_status, "to": call.status}))
            unit.record(call, events, origin="reconcile", previous_status=before)
        return call.status

    async def import_call(self, vapi_call_id: str) -> Call:
        """Track a call placed elsewhere: fetch it from Vapi (the listen supervisor, subscribed to call
        changes, listens to it if it is live)."""
        try:
            vapi_call = await self._vapi.get_call(vapi_call_id)
        except UpstreamError as exc:
            if exc.extra.get("vapiStatus") == 404:
                raise NotFoundError(f"Vapi has no call with id {vapi_call_id!r}") from None
            raise
        async with self._writer.transaction() as unit:
            call = await unit.lock_one(vapi_call["id"], origin="import")
            before = unit.status_before(call)
            merge_vapi_call(call, vapi_call)
            kind = "call.imported" if before is None else "call.refreshed"
            unit.record(
                call, [NewEvent("switchboard", kind, redact(vapi_call))], origin="import", previous_status=before
            )
        return await self.get_call(call.id)

    async def say(self, call_id: str, body: SayFields) -> Injection:
        """Post a ``say`` to the live call and journal it; a refused POST is stored as ``failed``."""
        return await self._control.send(call_id, {"type": "say", **msgspec.to_builtins(body)}, origin="api")

    async def control(self, call_id: str, body: ControlRequest) -> Injection:
        """Any other control message (add-message, control, end-call, transfer, append-context)."""
        return await self._control.send(call_id, msgspec.to_builtins(body), origin="api")

    async def _require_call(self, session: AsyncSession, call_id: str) -> Call:
        call = await session.get(Call, call_id)
        if call is None:
            raise NotFoundError(f"no call with id {call_id!r}")
        return call
