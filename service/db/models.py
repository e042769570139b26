"""Every table of the service, in one place.

Names follow ``docs/style.md``: singular snake_case tables (inferred from the class name by
advanced-alchemy), ``_at`` suffix for timestamps, constraint names from advanced-alchemy's
deterministic naming convention so that migrations stay reproducible.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from advanced_alchemy.base import BigIntBase, DefaultBase, UUIDv7Base
from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class TimestampedMixin:
    created_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow, onupdate=utcnow)


class Call(TimestampedMixin, DefaultBase):
    """A Vapi call Switchboard tracks. ``id`` is Vapi's call id."""

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    type: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), default="queued")
    ended_reason: Mapped[str | None] = mapped_column(Text)
    assistant_id: Mapped[str | None] = mapped_column(String(64))
    phone_number_id: Mapped[str | None] = mapped_column(String(64))
    customer: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)
    customer_number: Mapped[str | None] = mapped_column(String(64))
    call_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JsonB, default=dict)
    # Capabilities: whoever holds these can listen to or speak into the call. Never logged.
    listen_url: Mapped[str | None] = mapped_column(Text)
    control_url: Mapped[str | None] = mapped_column(Text)
    listen_auth: Mapped[bool] = mapped_column(Boolean, default=False)
    control_auth: Mapped[bool] = mapped_column(Boolean, default=False)
    # How the call became known: "api" (placed here), "webhook", "import".
    origin: Mapped[str] = mapped_column(String(16), default="api")
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    # Last allocated event sequence number; bumped atomically to give events a per-call order.
    last_event_seq: Mapped[int] = mapped_column(Integer, default=0)
    # Which replica records the call, until when: a lease renewed every few seconds (see listen.leases).
    listen_owner: Mapped[str | None] = mapped_column(String(64))
    listen_lease_until: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))

    recording: Mapped[Recording | None] = relationship(
        back_populates="call", uselist=False, lazy="noload", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_call_created_at_id", "created_at", "id"),
        Index("ix_call_status", "status"),
        Index("ix_call_customer_number", "customer_number"),
        Index("ix_call_assistant_id", "assistant_id"),
    )


class CallEvent(BigIntBase):
    """One entry of a call's timeline: a webhook, a listen-socket text frame, an injection, ..."""

    call_id: Mapped[str] = mapped_column(ForeignKey("call.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    type: Mapped[str] = mapped_column(String(128))
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True))
    received_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    payload: Mapped[Any] = mapped_column(JsonB)

    __table_args__ = (UniqueConstraint("call_id", "seq"),)


class Recording(TimestampedMixin, UUIDv7Base):
    """The call's audio: one per call, made of one segment per listen connection."""

    call_id: Mapped[str] = mapped_column(ForeignKey("call.id", ondelete="CASCADE"), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="recording")
    encoding: Mapped[str] = mapped_column(String(16), default="pcm_s16le")
    sample_rate: Mapped[int] = mapped_column(Integer)
    channels: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    # [{"atSeconds", "durationSeconds", "reason"}], in call order.
    gaps: Mapped[list[dict[str, Any]]] = mapped_column(JsonB, default=list)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))

    call: Mapped[Call] = relationship(back_populates="recording", lazy="noload")
    segments: Mapped[list[RecordingSegment]] = relationship(
        back_populates="recording",
        lazy="selectin",
        order_by="RecordingSegment.index",
        cascade="all, delete-orphan",
    )


class RecordingSegment(UUIDv7Base):
    """The bytes of one listen connection, stored under ``storage_key``."""

    recording_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("recording.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    storage_key: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="open")
    bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    sha256: Mapped[str | None] = mapped_column(String(64))
    # Silence that precedes this segment on the call's timeline (a gap), in PCM bytes.
    gap_before_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    started_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))

    recording: Mapped[Recording] = relationship(back_populates="segments", lazy="noload")

    __table_args__ = (UniqueConstraint("recording_id", "index"),)


class Injection(TimestampedMixin, UUIDv7Base):
    """A control message Switchboard posted into a live call (``say`` and the other control types)."""

    call_id: Mapped[str] = mapped_column(ForeignKey("call.id", ondelete="CASCADE"), index=True)
    type: Mapped[str] = mapped_column(String(32))
    body: Mapped[dict[str, Any]] = mapped_column(JsonB)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # Who asked: "api" for now; rules and the console come later.
    origin: Mapped[str] = mapped_column(String(16), default="api")
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)


metadata = DefaultBase.metadata
