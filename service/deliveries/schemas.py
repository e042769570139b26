"""The outbound-webhooks API contract (msgspec Structs, camelCase on the wire)."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

import msgspec

EventType = Literal[
    "call.created",
    "call.status_changed",
    "call.ended",
    "call.report",
    "recording.completed",
    "rule.fired",
    "injection.failed",
    "call.deleted",
    "call.analyzed",
    "rule.notified",
]


class EndpointCreate(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Subscribe a URL to events. Without ``secret`` one is generated and returned once."""

    url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048, examples=["https://crm.example.com/hooks"])]
    events: Annotated[list[EventType], msgspec.Meta(min_length=1)]
    # Standard Webhooks format: "whsec_" + base64 of 24 to 64 random bytes.
    secret: Annotated[str, msgspec.Meta(max_length=128, pattern=r"^whsec_[A-Za-z0-9+/]+={0,2}$")] | None = None


class EndpointOut(msgspec.Struct, rename="camel"):
    id: uuid.UUID
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    created_at: dt.datetime
    updated_at: dt.datetime


class EndpointCreated(msgspec.Struct, rename="camel"):
    """The new endpoint with its signing secret: the only time the secret is shown."""

    id: uuid.UUID
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    secret: str


class EndpointPage(msgspec.Struct, rename="camel"):
    data: list[EndpointOut]
    next_cursor: str | None


class AttemptOut(msgspec.Struct, rename="camel"):
    attempted_at: dt.datetime
    status_code: int | None
    error: str | None
    duration_ms: int


class DeliveryOut(msgspec.Struct, rename="camel"):
    """One event for one endpoint and every HTTP attempt made for it, in order."""

    id: uuid.UUID
    message_id: str
    event_type: str
    status: str
    attempt_count: int
    next_attempt_at: dt.datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: dt.datetime | None
    created_at: dt.datetime
    payload: dict[str, Any]
    attempts: list[AttemptOut]


class DeliveryPage(msgspec.Struct, rename="camel"):
    data: list[DeliveryOut]
    next_cursor: str | None
