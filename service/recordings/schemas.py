"""The recordings API contract."""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec


class Gap(msgspec.Struct, rename="camel"):
    at_seconds: float
    duration_seconds: float
    reason: str


class SegmentOut(msgspec.Struct, rename="camel"):
    index: int
    bytes: int
    status: str
    started_at: dt.datetime
    ended_at: dt.datetime | None


class VapiCopyOut(msgspec.Struct, rename="camel"):
    """Switchboard's copy of Vapi's stereo recording (``GET …/recording/vapi`` once ``stored``)."""

    status: str  # pending (being downloaded, retried with backoff), stored, failed
    bytes: int | None
    sha256: str | None
    content_type: str | None
    attempts: int
    error: str | None
    stored_at: dt.datetime | None


class RecordingOut(msgspec.Struct, rename="camel"):
    call_id: str
    status: str
    encoding: str
    sample_rate: int
    channels: int
    bytes: int
    duration_seconds: float
    sha256: str | None
    gaps: list[Gap]
    segments: list[SegmentOut]
    # At rest: "pcm" (raw segments, storedBytes == bytes) or "flac" (the lossless archive's size).
    format: str
    stored_bytes: int
    error: str | None
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    # Vapi's own stereo recording, kept (contract section 10): null until the end-of-call report.
    vapi_copy: VapiCopyOut | None = None


class RecordingListItem(msgspec.Struct, rename="camel"):
    call_id: str
    status: str
    encoding: str
    sample_rate: int
    channels: int
    bytes: int
    duration_seconds: float
    sha256: str | None
    gaps: list[Gap]
    format: str
    stored_bytes: int
    started_at: dt.datetime | None
    completed_at: dt.datetime | None
    assistant_id: str | None
    customer: dict[str, Any]
    metadata: dict[str, Any]


class RecordingPage(msgspec.Struct, rename="camel"):
    data: list[RecordingListItem]
    next_cursor: str | None
