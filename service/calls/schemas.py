"""The calls API contract (msgspec Structs, camelCase on the wire). Separate from the ORM models.

The bodies of the say and control routes are Vapi's control messages: ``service.vapi.control``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any

import msgspec

from service.calls.analytics import AnalyticsOut
from service.calls.ids import CALL_ID_EXAMPLE, CALL_ID_PATTERN
from service.vapi.control import E164, SayFields

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Customer(msgspec.Struct, rename="camel", omit_defaults=True, forbid_unknown_fields=True):
    number: E164
    name: str | None = None
    email: str | None = None
    external_id: str | None = None


class CallCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Place an outbound call through Vapi."""

    assistant_id: NonEmpty
    phone_number_id: NonEmpty
    customer: Customer
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)
    # Passed through to Vapi; Switchboard adds its server URL, subscriptions and monitor plan.
    assistant_overrides: dict[str, Any] = msgspec.field(default_factory=dict)


class Monitor(msgspec.Struct, rename="camel", omit_defaults=True):
    """Whether the call can be listened to and controlled. The URLs themselves are capabilities
    (whoever holds them can listen or speak into the call) and are shown to admin keys only."""

    listen: bool
    control: bool
    listen_url: str | None = None
    control_url: str | None = None


class RecordingSummary(msgspec.Struct, rename="camel"):
    status: str
    duration_seconds: float
    bytes: int


class CallOut(msgspec.Struct, rename="camel"):
    id: str
    type: str | None
    status: str
    ended_reason: str | None
    assistant_id: str | None
    phone_number_id: str | None
    customer: dict[str, Any]
    metadata: dict[str, Any]
    monitor: Monitor
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    recording: RecordingSummary | None
    # PUT /v1/calls/{id}/legal-hold: a held call is never erased (service.lifecycle).
    legal_hold: bool = False
    legal_hold_reason: str | None = None
    # The customer's own server for the call (contract section 9); admin keys only: it may hold secrets.
    upstream: dict[str, Any] | None = None
    analytics: AnalyticsOut | None = None  # from the recording, once final (GET /v1/calls/{id}/analytics)
    # What Vapi reports about the finished call (contract section 10): from its end-of-call report or
    # its call object, whichever Vapi wrote later; null until Vapi says.
    cost: float | None = None
    costs: list[dict[str, Any]] | None = None
    summary: str | None = None
    analysis: dict[str, Any] | None = None
    structured_outputs: dict[str, Any] | None = None
    ended_message: str | None = None
    phone_call_provider: str | None = None
    phone_call_provider_id: str | None = None
    squad_id: str | None = None
    workflow_id: str | None = None


class ForwardOut(msgspec.Struct, rename="camel"):
    """One server message passed on to the call's upstream: its delivery log entry."""

    id: int
    seq: int | None
    message_type: str
    status: str
    attempts: int
    last_status_code: int | None
    last_error: str | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None


class ForwardPage(msgspec.Struct, rename="camel"):
    data: list[ForwardOut]


class CallPage(msgspec.Struct, rename="camel"):
    data: list[CallOut]
    next_cursor: str | None


class EventOut(msgspec.Struct, rename="camel"):
    seq: int
    source: str
    type: str
    occurred_at: dt.datetime
    payload: Any


class EventPage(msgspec.Struct, rename="camel"):
    data: list[EventOut]
    next_cursor: str | None


class SayIn(SayFields):
    """A sentence for the assistant to speak now: Vapi's ``say`` without its ``type``."""


class InjectionOut(msgspec.Struct, rename="camel"):
    id: uuid.UUID
    type: str
    status: str
    sent_at: dt.datetime | None
    error: str | None
    created_at: dt.datetime
    # A say: when Vapi said its speech started (status spoken, or interrupted when the customer cut in).
    spoken_at: dt.datetime | None = None


VapiId = Annotated[str, msgspec.Meta(pattern=CALL_ID_PATTERN, examples=[CALL_ID_EXAMPLE])]


class CallImport(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Track a call Switchboard did not place."""

    vapi_call_id: VapiId
