"""The search API contract (msgspec Structs, camelCase on the wire)."""

from __future__ import annotations

import datetime as dt

import msgspec


class TranscriptHit(msgspec.Struct, rename="camel"):
    """One utterance that matches. ``highlight`` is ``text`` HTML-escaped with each match in
    ``<mark>…</mark>``; ``offsetSeconds`` is where the utterance starts in the call's recording
    (``recording.wav?start=`` plays it), null when the call has no recording."""

    call_id: str
    seq: int
    role: str
    text: str
    highlight: str
    occurred_at: dt.datetime
    offset_seconds: float | None


class TranscriptHitPage(msgspec.Struct, rename="camel"):
    data: list[TranscriptHit]
    next_cursor: str | None
