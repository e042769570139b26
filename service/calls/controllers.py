"""HTTP surface of the calls slice: thin handlers, one service call each."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import HeaderParameter, JSONBody, QueryParameter
from litestar.status_codes import HTTP_201_CREATED, HTTP_202_ACCEPTED

from service.auth import current_principal, scoped
from service.calls.analytics import analytics_out
from service.calls.ids import CallIdPath
from service.calls.redact import hide_recording_urls
from service.calls.report import summary
from service.calls.schemas import (
    CallCreate,
    CallImport,
    CallOut,
    CallPage,
    EventOut,
    EventPage,
    ForwardOut,
    ForwardPage,
    InjectionOut,
    Monitor,
    RecordingSummary,
    SayIn,
)
from service.calls.service import CallFilters, CallService, metadata_filters
from service.calls.status import CallStatus
from service.db.models import Call, CallEvent, Injection, UpstreamForward
from service.fulltext.query import QUERY_HELP, parse_query
from service.idempotency.service import HEADER, IdempotencyService
from service.pagination import Cursor, Limit
from service.vapi.control import ControlRequest

Calls = NamedDependency[CallService]
Idempotency = NamedDependency[IdempotencyService]
IdempotencyKey = Annotated[
    str | None,
    HeaderParameter(
        name=HEADER,
        description="Retries with the same key and body get the first response; another body gets 422.",
    ),
]

# Who wrote an event: Vapi (webhooks), the listen socket (its text frames), Switchboard itself.
EventSource = Literal["vapi", "listen", "switchboard"]

# The call-record filters of GET /v1/calls and GET /v1/recordings (contract section 10).
VapiCallType = Literal["inboundPhoneCall", "outboundPhoneCall", "webCall", "vapi.websocketCall"]  # SDK CallType
EndedReasonFilter = Annotated[
    str | None,
    QueryParameter(
        name="endedReason",
        max_length=200,
        description="Why Vapi says the call ended, exactly (e.g. customer-ended-call)",
    ),
]
PhoneNumberIdFilter = Annotated[str | None, QueryParameter(name="phoneNumberId", max_length=64)]
CallTypeFilter = Annotated[VapiCallType | None, QueryParameter(name="type", description="Vapi's call type")]


def call_out(call: Call, *, show_monitor_urls: bool) -> CallOut:
    monitor = Monitor(listen=call.listen_url is not None, control=call.control_url is not None)
    if show_monitor_urls:
        monitor.listen_url, monitor.control_url = call.listen_url, call.control_url
    recording = None
    if call.recording is not None:
        recording = RecordingSummary(
            status=call.recording.status,
            duration_seconds=call.recording.seconds(call.recording.bytes),
            bytes=call.recording.bytes,
        )
    return CallOut(
        id=call.id,
        type=call.type,
        status=call.status,
        ended_reason=call.ended_reason,
        assistant_id=call.assistant_id,
        phone_number_id=call.phone_number_id,
        customer=call.customer or {},
        metadata=call.call_metadata or {},
        monitor=monitor,
        created_at=call.created_at,
        updated_at=call.updated_at,
        started_at=call.started_at,
        ended_at=call.ended_at,
        recording=recording,
        legal_hold=call.legal_hold,
        legal_hold_reason=call.legal_hold_reason,
        upstream=call.upstream if show_monitor_urls else None,
        analytics=analytics_out(call.analytics),
        cost=call.cost,
        costs=call.costs,
        summary=summary(call),
        analysis=call.analysis,
        structured_outputs=call.structured_outputs,
        ended_message=call.ended_message,
        phone_call_provider=call.phone_call_provider,
        phone_call_provider_id=call.phone_call_provider_id,
        squad_id=call.squad_id,
        workflow_id=call.workflow_id,
    )


def event_out(event: CallEvent, *, show_recording_urls: bool = True) -> EventOut:
    payload = event.payload if show_recording_urls else hide_recording_urls(event.payload)
    return EventOut(seq=event.seq, source=event.source, type=event.type, occurred_at=event.occurred_at, payload=payload)


def forward_out(forward: UpstreamForward) -> ForwardOut:
    return ForwardOut(
        id=forward.id,
        seq=forward.seq,
        message_type=forward.message_type,
        status=forward.status,
        attempts=forward.attempts,
        last_status_code=forward.last_status_code,
        last_error=forward.last_error,
        created_at=forward.created_at,
        delivered_at=forward.delivered_at,
    )


def injection_out(injection: Injection) -> InjectionOut:
    return InjectionOut(
        id=injection.id,
        type=injection.type,
        status=injection.status,
        sent_at=injection.sent_at,
        error=injection.error,
        created_at=injection.created_at,
        spoken_at=injection.spoken_at,
    )


async def injected(
    request: Request[Any, Any, Any],
    idempotency: IdempotencyService,
    key: str | None,
    route: str,
    data: object,
    send: Callable[[], Awaitable[Injection]],
) -> Response[InjectionOut]:
    """Send a control message once per ``Idempotency-Key``; retries get the first answer."""

    async def handler() -> InjectionOut:
        return injection_out(await send())

    result = await idempotency.run(
        principal=current_principal(request).identity,
        route=route,
        key=key,
        request=data,
        status=HTTP_202_ACCEPTED,
        handler=handler,
    )
    return result.to_response()


class CallController(Controller):
    path = "/v1/calls"
    tags = ["calls"]

    @post(
        "/",
        operation_id="createCall",
        summary="Place an outbound call",
        description=(
            "Creates the call at Vapi, stores it and starts recording it. The answer is the call as stored "
            "at placement: `recording` is null (the listen session starts right after; "
            "`GET /v1/calls/{id}` shows it)."
        ),
        status_code=HTTP_201_CREATED,
        **scoped("calls:write"),
    )
    async def create_call(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[CallCreate],
        calls: Calls,
        idempotency: Idempotency,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[CallOut]:
        principal = current_principal(request)

        async def place() -> CallOut:
            return call_out(await calls.place_call(data), show_monitor_urls=principal.is_admin)

        result = await idempotency.run(
            principal=principal.identity,
            route="POST /v1/calls",
            key=idempotency_key,
            request=data,
            status=HTTP_201_CREATED,
            handler=place,
        )
        return result.to_response()

    @post(
        "/import",
        operation_id="importCall",
        summary="Track a call placed elsewhere (fetched from Vapi)",
        status_code=HTTP_201_CREATED,
        **scoped("calls:write"),
    )
    async def import_call(self, request: Request[Any, Any, Any], data: JSONBody[CallImport], calls: Calls) -> CallOut:
        call = await calls.import_call(data.vapi_call_id)
        return call_out(call, show_monitor_urls=current_principal(request).is_admin)

    @get("/", operation_id="listCalls", summary="List calls, newest first", **scoped("calls:read"))
    async def list_calls(
        self,
        request: Request[Any, Any, Any],
        calls: Calls,
        limit: Limit = 50,
        cursor: Cursor = None,
        status: Annotated[CallStatus | None, QueryParameter(description="Call status")] = None,
        assistant_id: Annotated[str | None, QueryParameter(name="assistantId")] = None,
        customer_number: Annotated[str | None, QueryParameter(name="customerNumber")] = None,
        created_after: Annotated[dt.datetime | None, QueryParameter(name="createdAfter")] = None,
        created_before: Annotated[dt.datetime | None, QueryParameter(name="createdBefore")] = None,
        q: Annotated[str | None, QueryParameter(description=f"Calls where this was said. {QUERY_HELP}")] = None,
        min_longest_silence_seconds: Annotated[
            float | None, QueryParameter(name="minLongestSilenceSeconds", ge=0, description="Analysed calls only")
        ] = None,
        min_overlap_seconds: Annotated[
            float | None, QueryParameter(name="minOverlapSeconds", ge=0, description="Analysed calls only")
        ] = None,
        ended_reason: EndedReasonFilter = None,
        phone_number_id: PhoneNumberIdFilter = None,
        call_type: CallTypeFilter = None,
    ) -> CallPage:
        filters = CallFilters(
            status,
            assistant_id,
            customer_number,
            created_after,
            created_before,
            metadata_filters(request.query_params),
            saying=parse_query(q) if q is not None else None,
            min_longest_silence_seconds=min_longest_silence_seconds,
            min_overlap_seconds=min_overlap_seconds,
            ended_reason=ended_reason,
            phone_number_id=phone_number_id,
            type=call_type,
        )
        page, next_cursor = await calls.list_calls(filters, limit=limit, cursor=cursor)
        admin = current_principal(request).is_admin
        return CallPage(data=[call_out(call, show_monitor_urls=admin) for call in page], next_cursor=next_cursor)

    @get("/{call_id:str}", operation_id="getCall", summary="Get one call", **scoped("calls:read"))
    async def get_call(self, request: Request[Any, Any, Any], call_id: CallIdPath, calls: Calls) -> CallOut:
        call = await calls.get_call(call_id)
        return call_out(call, show_monitor_urls=current_principal(request).is_admin)

    @get(
        "/{call_id:str}/events",
        operation_id="listCallEvents",
        summary="A call's timeline, oldest first",
        **scoped("calls:read"),
    )
    async def list_events(
        self,
        request: Request[Any, Any, Any],
        call_id: CallIdPath,
        calls: Calls,
        limit: Limit = 200,
        cursor: Cursor = None,
        after_seq: Annotated[int, QueryParameter(name="afterSeq", ge=0)] = 0,
        event_type: Annotated[list[str] | None, QueryParameter(name="type")] = None,
        source: Annotated[EventSource | None, QueryParameter(name="source")] = None,
    ) -> EventPage:
        events, next_cursor = await calls.list_events(
            call_id, after_seq=after_seq, limit=limit, types=event_type or (), source=source, cursor=cursor
        )
        # Recording and pcap URLs in payloads are for keys that may read recordings (contract section 9).
        urls = current_principal(request).allows("recordings:read")
        return EventPage(data=[event_out(event, show_recording_urls=urls) for event in events], next_cursor=next_cursor)

    @get(
        "/{call_id:str}/forwards",
        operation_id="listCallForwards",
        summary="What was forwarded to the call's upstream, oldest first",
        description="The delivery log of the tap: one entry per server message passed on to the customer's server.",
        **scoped("calls:read"),
    )
    async def list_forwards(self, call_id: CallIdPath, calls: Calls, limit: Limit = 200) -> ForwardPage:
        forwards = await calls.list_forwards(call_id, limit=limit)
        return ForwardPage(data=[forward_out(forward) for forward in forwards])

    @post(
        "/{call_id:str}/say",
        operation_id="sayInCall",
        summary="Make the assistant say something now",
        status_code=HTTP_202_ACCEPTED,
        **scoped("calls:write"),
    )
    async def say(
        self,
        request: Request[Any, Any, Any],
        call_id: CallIdPath,
        data: JSONBody[SayIn],
        calls: Calls,
        idempotency: Idempotency,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[InjectionOut]:
        return await injected(
            request,
            idempotency,
            idempotency_key,
            f"POST /v1/calls/{call_id}/say",
            data,
            lambda: calls.say(call_id, data),
        )

    @post(
        "/{call_id:str}/control",
        operation_id="controlCall",
        summary="Send a control message (add-message, control, end-call, transfer, append-context)",
        status_code=HTTP_202_ACCEPTED,
        **scoped("calls:write"),
    )
    async def control(
        self,
        request: Request[Any, Any, Any],
        call_id: CallIdPath,
        data: JSONBody[ControlRequest],
        calls: Calls,
        idempotency: Idempotency,
        idempotency_key: IdempotencyKey = None,
    ) -> Response[InjectionOut]:
        route = f"POST /v1/calls/{call_id}/control"
        return await injected(request, idempotency, idempotency_key, route, data, lambda: calls.control(call_id, data))
