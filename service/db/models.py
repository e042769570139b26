"""Every table of the service, in one place.

Names: singular snake_case tables (inferred from the class name by
advanced-alchemy), ``_at`` suffix for timestamps, constraint names from advanced-alchemy's
deterministic naming convention so that migrations stay reproducible.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from advanced_alchemy.base import BigIntBase, DefaultBase, UUIDv7Base
from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.ext.hybrid import hybrid_property
from sqlalchemy.orm import Mapped, mapped_column, relationship

# Longest metadata value stored as is in ``call_metadata.value`` (longer ones are stored as a digest).
METADATA_VALUE_LENGTH = 200


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
    # Lifecycle (service.lifecycle): a held call is never erased. ``erasing_until`` set is the erasure's
    # tombstone, committed before any storage object is deleted; it is also the eraser's claim, and a
    # sweep finishes a tombstone whose claim has lapsed (its eraser died).
    legal_hold: Mapped[bool] = mapped_column(Boolean, default=False)
    legal_hold_reason: Mapped[str | None] = mapped_column(Text)
    erasing_until: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    # The customer's own server for this call (contract section 9, ``calls.upstream``): url, headers,
    # secret, timeoutSeconds, source, serverMessages. May hold secrets: shown to admin keys only.
    upstream: Mapped[dict[str, Any] | None] = mapped_column(JsonB, nullable=True)
    # What Vapi reports about the finished call (contract section 10), from its end-of-call report or its
    # Call object, whichever Vapi wrote later (``reported_at``: the time of the source taken).
    ended_message: Mapped[str | None] = mapped_column(Text)
    cost: Mapped[float | None] = mapped_column(Float)
    costs: Mapped[list[dict[str, Any]] | None] = mapped_column(JsonB, nullable=True)
    analysis: Mapped[dict[str, Any] | None] = mapped_column(JsonB, nullable=True)
    structured_outputs: Mapped[dict[str, Any] | None] = mapped_column(JsonB, nullable=True)
    phone_call_provider: Mapped[str | None] = mapped_column(String(32))
    phone_call_provider_id: Mapped[str | None] = mapped_column(String(128))
    squad_id: Mapped[str | None] = mapped_column(String(64))
    workflow_id: Mapped[str | None] = mapped_column(String(64))
    reported_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    # Vapi's ``createdAt``: the catch-up (service.calls.catchup) lists Vapi's calls created after the latest.
    vapi_created_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    # The id of the call's newest ``transcript_utterance`` (0: none), where a search limited to calls
    # created long ago starts its walk over the matches (service.search.service). None: not known, as
    # every stored event clears it; settled by the lifecycle sweep once the call is quiet
    # (service.fulltext.ceilings.settle_ceilings).
    utterance_ceiling: Mapped[int | None] = mapped_column(BigInteger)

    # Read-only (recordings are written through their own rows; the foreign key cascades deletes): a
    # writable relationship made every flush of a changed call inspect it, ~5 % of webhook ingest.
    recording: Mapped[Recording | None] = relationship(
        back_populates="call", uselist=False, lazy="noload", viewonly=True
    )
    analytics: Mapped[CallAnalytics | None] = relationship(uselist=False, lazy="noload", viewonly=True)

    # Every list query is "filter, newest first": each filter's index ends with the sort key, so a
    # page is an index range scan, never a sort of all matches.
    __table_args__ = (
        Index("ix_call_created_at_id", "created_at", "id"),
        Index("ix_call_status_created_at", "status", "created_at", "id"),
        Index("ix_call_customer_number_created_at", "customer_number", "created_at", "id"),
        Index("ix_call_assistant_id_created_at", "assistant_id", "created_at", "id"),
        Index("ix_call_ended_reason_created_at", "ended_reason", "created_at", "id"),
        Index("ix_call_phone_number_id_created_at", "phone_number_id", "created_at", "id"),
        Index("ix_call_type_created_at", "type", "created_at", "id"),
        Index("ix_call_vapi_created_at", "vapi_created_at"),  # the catch-up's "last seen createdAt"
        Index("ix_call_updated_at", "updated_at"),  # the console's change stream (service/console/feed.py)
        Index("ix_call_ended_at", "ended_at"),  # the retention sweep: calls ended before a cutoff
        Index("ix_call_erasing_until", "erasing_until"),  # the erasure sweep: tombstones left by a crash
        # The calls whose utterance ceiling is to be settled, by how long they have been quiet.
        Index(
            "ix_call_unsettled_ceiling",
            "updated_at",
            sqlite_where=text("utterance_ceiling IS NULL"),
            postgresql_where=text("utterance_ceiling IS NULL"),
        ),
    )


class ErasedCall(DefaultBase):
    """A call that was erased: remembered (its id only) so that a late webhook or a catch-up round
    does not store it again."""

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(16))  # request | retention | sweep
    erased_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)


class CallMetadata(DefaultBase):
    """The index of ``metadata.<key>=<value>`` filters: one row per top-level scalar of a call's metadata.

    Written only by :class:`service.calls.rows.CallRows`, with the call's metadata; the encoding is
    ``service.calls.metadata``. ``created_at`` is the call's: a filter is one range of
    ``ix_call_metadata_key_value``, already newest first.
    """

    call_id: Mapped[str] = mapped_column(ForeignKey("call.id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(100), primary_key=True)
    value: Mapped[str] = mapped_column(String(METADATA_VALUE_LENGTH))
    kind: Mapped[str] = mapped_column(String(1))
    created_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True))

    # ``kind`` last: the ids of the calls a filter matches are read from the index alone (``kind`` tells
    # the string "42" from the number 42), newest first.
    __table_args__ = (Index("ix_call_metadata_key_value", "key", "value", "created_at", "call_id", "kind"),)


class CallEvent(BigIntBase):
    """One entry of a call's timeline: a webhook, a listen-socket text frame, an injection, ..."""

    call_id: Mapped[str] = mapped_column(ForeignKey("call.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(16))
    type: Mapped[str] = mapped_column(String(128))
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True))
    received_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    payload: Mapped[Any] = mapped_column(JsonB)
    # Duplicate webhook deliveries carry the same key and are stored once (see webhooks.service).
    dedupe_key: Mapped[str | None] = mapped_column(String(64))
    # A final transcript's utterance (``calls.events.transcript_key``): the rules count the identical
    # utterances before one through this index instead of reading the call's whole transcript.
    utterance: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("call_id", "seq"),
        UniqueConstraint("call_id", "dedupe_key", name="uq_call_event_dedupe_key"),
        Index(
            "ix_call_event_utterance",
            "call_id",
            "utterance",
            "source",
            "seq",
            sqlite_where=text("utterance IS NOT NULL"),
            postgresql_where=text("utterance IS NOT NULL"),
        ),
    )


class TranscriptUtterance(BigIntBase):
    """One final utterance of a call's transcript, stored once: the content of the transcript search index.

    Written with its event (``service.search.index``). The webhook and the listen copy of an utterance
    share ``(call_id, utterance, ordinal)``: the n-th identical utterance of either source, so the first
    copy stored wins. The full-text index lives beside the table, per database (migration 0010): an FTS5
    external-content table kept in sync by triggers on SQLite; on PostgreSQL a generated ``tsvector``
    column ``search_document`` and its GIN index.
    """

    call_id: Mapped[str] = mapped_column(ForeignKey("call.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)  # the event of the copy stored
    utterance: Mapped[str] = mapped_column(String(64))  # ``calls.events.transcript_key``
    ordinal: Mapped[int] = mapped_column(Integer)  # n-th identical utterance from the copy's source
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True))

    __table_args__ = (
        UniqueConstraint("call_id", "utterance", "ordinal"),
        Index("ix_transcript_utterance_call_id_seq", "call_id", "seq"),
    )


class CallAnalytics(TimestampedMixin, DefaultBase):
    """Who talked when in a call, measured from its recording by a voice activity detector.

    A row is written ``pending`` when the recording is finalised (``service.recordings.analysis_queue``); the
    analytics worker leases it (``lease_until``, ``attempts`` as a fencing token), analyses the audio
    and fills in the numbers (``completed``), or gives up (``failed``, with ``error``).
    """

    call_id: Mapped[str] = mapped_column(ForeignKey("call.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | completed | failed
    customer_talk_seconds: Mapped[float | None] = mapped_column(Float)
    customer_silence_seconds: Mapped[float | None] = mapped_column(Float)
    assistant_talk_seconds: Mapped[float | None] = mapped_column(Float)
    assistant_silence_seconds: Mapped[float | None] = mapped_column(Float)
    overlap_seconds: Mapped[float | None] = mapped_column(Float)
    longest_silence_seconds: Mapped[float | None] = mapped_column(Float)
    customer_interruptions: Mapped[int | None] = mapped_column(Integer)
    assistant_interruptions: Mapped[int | None] = mapped_column(Integer)
    talk_ratio: Mapped[float | None] = mapped_column(Float)
    analyzed_seconds: Mapped[float | None] = mapped_column(Float)  # audio heard: the gaps left out
    # {"customer": [[start, end], …], "assistant": […]}: seconds into the WAV download (the console's lanes).
    activity: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    completed_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))

    # The worker looks for pending rows whose lease is free: one index range, however many calls.
    __table_args__ = (Index("ix_call_analytics_status_lease_until", "status", "lease_until"),)


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
    # How the audio is at rest: "pcm" (the segments as received) or "flac" (one lossless archive,
    # ``{call_id}/recording.flac``, whose decoded PCM is the segments concatenated; the segment rows stay
    # as the timeline's map). ``stored_bytes``: bytes at rest, when they differ from ``bytes`` (archives).
    format: Mapped[str] = mapped_column(String(8), default="pcm")
    stored_bytes: Mapped[int | None] = mapped_column(BigInteger)
    # The archiver's claim on the recording (one archiver per recording across replicas).
    archiving_until: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    # The Opus listening copy (recording.ogg), made on the first request and kept: where, how big.
    listening_key: Mapped[str | None] = mapped_column(Text)
    listening_bytes: Mapped[int | None] = mapped_column(BigInteger)

    call: Mapped[Call] = relationship(back_populates="recording", lazy="noload", viewonly=True)

    # The open recordings (status "recording") are looked up every few seconds by every replica; the
    # archiver looks up the finished recordings still in PCM.
    __table_args__ = (Index("ix_recording_status", "status"), Index("ix_recording_format_status", "format", "status"))

    @hybrid_property
    def byte_rate(self) -> int:
        """PCM bytes per second of audio (s16le: two bytes a sample); also usable in queries."""
        return self.sample_rate * self.channels * 2

    def seconds(self, size: int) -> float:
        """How long ``size`` bytes of this recording's audio last."""
        return round(size / self.byte_rate, 3) if self.byte_rate else 0.0

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
    # Who asked: "api" (the say and control routes) or "rule" (a rule's firing).
    origin: Mapped[str] = mapped_column(String(16), default="api")
    sent_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    error: Mapped[str | None] = mapped_column(Text)
    # Did Vapi speak it (a say; service.calls.speech): when its speech started (status ``spoken``, or
    # ``interrupted`` when the customer cut in) and when it stopped.
    spoken_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    speech_ended_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class ApiKey(TimestampedMixin, UUIDv7Base):
    """An API key: only a SHA-256 of it is stored (keys are 32 random bytes, so no slow hash is needed);
    ``prefix`` (the first characters) finds the row and is shown in listings."""

    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str]] = mapped_column(JsonB)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))


class IdempotencyRecord(DefaultBase):
    """The first response to a request sent with an ``Idempotency-Key``, replayed for retries."""

    # Who asked (the API key's name or id) and for what route: one key may be reused on another route.
    principal: Mapped[str] = mapped_column(String(100), primary_key=True)
    route: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="in_flight")  # in_flight | done
    response_status: Mapped[int | None] = mapped_column(Integer)
    response_body: Mapped[Any] = mapped_column(JsonB, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), index=True)


class WebhookEndpoint(TimestampedMixin, UUIDv7Base):
    """Where Switchboard sends its own events (outbound webhooks, signed per Standard Webhooks)."""

    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]] = mapped_column(JsonB)
    secret: Mapped[str] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    disabled_reason: Mapped[str | None] = mapped_column(Text)


class WebhookDelivery(TimestampedMixin, UUIDv7Base):
    """One event for one endpoint: the durable outbox row, retried until delivered or abandoned."""

    endpoint_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_endpoint.id", ondelete="CASCADE"))
    message_id: Mapped[str] = mapped_column(String(64))  # the webhook-id header, stable across retries
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonB)
    # The call the event is about (None for others): erasing a call deletes its deliveries by this index.
    call_id: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | abandoned
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))

    __table_args__ = (
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
        Index("ix_webhook_delivery_endpoint_id", "endpoint_id", "created_at"),
        Index("ix_webhook_delivery_call_id", "call_id"),
    )


class WebhookDeliveryAttempt(UUIDv7Base):
    """One HTTP attempt of a delivery: the delivery log."""

    delivery_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("webhook_delivery.id", ondelete="CASCADE"), index=True)
    attempted_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)


class VapiRecording(TimestampedMixin, DefaultBase):
    """Switchboard's copy of Vapi's stereo recording of a call (contract section 10), and the durable
    marker of its download: ``pending`` until stored (``service.recordings.vapi_copy``), retried with
    backoff across restarts, ``failed`` once the attempts are used up."""

    call_id: Mapped[str] = mapped_column(ForeignKey("call.id", ondelete="CASCADE"), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    # Where Vapi said the file is (artifact.stereoRecordingUrl); GET /call/{id}/stereo-recording otherwise.
    url: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    storage_key: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(String(100))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    stored_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))

    __table_args__ = (Index("ix_vapi_recording_due", "status", "next_attempt_at"),)


class UpstreamForward(TimestampedMixin, BigIntBase):
    """One server message to pass on to the call's upstream (the customer's server): the durable
    queue of the tap. Sent in ``id`` order per call, each after the previous one is settled."""

    call_id: Mapped[str] = mapped_column(ForeignKey("call.id", ondelete="CASCADE"))
    seq: Mapped[int | None] = mapped_column(Integer)  # the timeline event it forwards
    message_type: Mapped[str] = mapped_column(String(128))
    body: Mapped[str] = mapped_column(Text)  # the raw JSON body as Vapi sent it
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | abandoned
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True), default=utcnow)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))

    __table_args__ = (
        Index("ix_upstream_forward_due", "status", "next_attempt_at"),
        Index("ix_upstream_forward_call_id", "call_id", "status", "id"),
    )


class Rule(TimestampedMixin, DefaultBase):
    """A rule stored through the API (rules from the YAML file live in memory only)."""

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(JsonB)


class RuleFiring(TimestampedMixin, UUIDv7Base):
    """One firing of a rule for one occurrence of its milestone on one call.

    The unique key is the exactly-once guarantee: the row is written before the control POST, so a
    rule never speaks twice for one occurrence, across restarts and replicas. Delayed firings wait
    here (``status = scheduled``, ``due_at``) and survive restarts.
    """

    rule_name: Mapped[str] = mapped_column(String(100))
    call_id: Mapped[str] = mapped_column(ForeignKey("call.id", ondelete="CASCADE"))
    occurrence: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="scheduled")  # scheduled|firing|fired|failed|skipped
    due_at: Mapped[dt.datetime] = mapped_column(DateTimeUTC(timezone=True))
    fired_at: Mapped[dt.datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    injection_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("injection.id", ondelete="SET NULL"))
    detail: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("rule_name", "call_id", "occurrence"),
        Index("ix_rule_firing_due", "status", "due_at"),
        Index("ix_rule_firing_call_id", "call_id", "created_at"),
    )


metadata = DefaultBase.metadata

# Schema objects the migrations create beside the models: the full-text index of transcript_utterance
# (SQLite's FTS5 table and its shadow tables; PostgreSQL's generated tsvector column and its GIN index).
FULL_TEXT_OBJECTS = ("transcript_fts", "ix_transcript_utterance_search", "search_document")


def described_by_models(name: str | None, type_: str, _parents: object) -> bool:
    """Alembic's ``include_name``: False for the full-text objects, which no model describes."""
    return not (name or "").startswith(FULL_TEXT_OBJECTS)
