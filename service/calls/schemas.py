"""The calls API contract (msgspec Structs, camelCase on the wire). Separate from the ORM models."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import msgspec

from service.calls.ids import CALL_ID_EXAMPLE, CALL_ID_PATTERN

E164 = Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{6,14}$", examples=["+14155550123"])]
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


class SayIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """A sentence for the assistant to speak now."""

    content: Annotated[str, msgspec.Meta(min_length=1, max_length=5000)]
    end_call_after_spoken: bool = False
    interrupt_assistant_enabled: bool = False
    interruptions_enabled: bool = True


class InjectionOut(msgspec.Struct, rename="camel"):
    id: uuid.UUID
    type: str
    status: str
    sent_at: dt.datetime | None
    error: str | None
    created_at: dt.datetime


VapiId = Annotated[str, msgspec.Meta(pattern=CALL_ID_PATTERN, examples=[CALL_ID_EXAMPLE])]


class CallImport(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Track a call Switchboard did not place."""

    vapi_call_id: VapiId


class ConversationMessage(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["system", "user", "assistant", "tool", "function"]
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=20000)]


class AddMessage(msgspec.Struct, tag="add-message", tag_field="type", rename="camel", forbid_unknown_fields=True):
    """Add a message to the conversation; the assistant answers it unless told not to."""

    message: ConversationMessage
    trigger_response_enabled: bool = True


class Control(msgspec.Struct, tag="control", tag_field="type", forbid_unknown_fields=True):
    """Mute or unmute a side, or make the assistant say its first message."""

    control: Literal["mute-assistant", "unmute-assistant", "mute-customer", "unmute-customer", "say-first-message"]


class EndCall(msgspec.Struct, tag="end-call", tag_field="type", forbid_unknown_fields=True):
    """End the call now."""


class NumberDestination(
    msgspec.Struct, tag="number", tag_field="type", rename="camel", omit_defaults=True, forbid_unknown_fields=True
):
    number: E164
    extension: str | None = None
    caller_id: str | None = None


class SipDestination(
    msgspec.Struct, tag="sip", tag_field="type", rename="camel", omit_defaults=True, forbid_unknown_fields=True
):
    sip_uri: Annotated[str, msgspec.Meta(pattern=r"^sips?:", examples=["sip:agent@example.com"])]
    sip_headers: dict[str, str] | None = None


class Transfer(msgspec.Struct, tag="transfer", tag_field="type", omit_defaults=True, forbid_unknown_fields=True):
    """Transfer the call; ``content`` is spoken first."""

    destination: NumberDestination | SipDestination
    content: str | None = None


class AppendContext(msgspec.Struct, tag="append-context", tag_field="type", forbid_unknown_fields=True):
    kind: Literal["commentary", "thinking", "instructions"]
    content: Annotated[str, msgspec.Meta(min_length=1, max_length=20000)]


ControlIn = AddMessage | Control | EndCall | Transfer | AppendContext
