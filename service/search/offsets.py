"""Where an utterance is in its call's recording: from a moment of the call to seconds into the WAV.

Pure arithmetic over the recording's segments (one per listen connection). The WAV download lays them
out in order, each preceded by its gap (lost audio, filled with silence), so a moment of the call maps
into the segment whose audio had started by then: the audio and gaps before that segment, plus the time
since its audio started. A segment's audio starts when its connection opened, but never before the call
was answered: the listen socket is often connected while the call rings, and audio flows from the answer.
(Anchoring on a segment's close less its audio was tried: the close trails the last frame by the read
interval and the write, ~0.3 s late.)

The moment an utterance begins is its ``speech-update`` ``started`` (the earliest copy of that turn:
webhook or listen socket), else the utterance's own time, see :func:`speech_start`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

# A speech start further back than this is not the utterance's (a missed start, a stray update).
MAX_UTTERANCE_SECONDS = 120.0


@dataclass(frozen=True, slots=True)
class SegmentClock:
    """One recording segment, as far as timing goes."""

    started_at: dt.datetime  # when the connection opened
    bytes: int
    gap_before_bytes: int


def recording_offset(
    at: dt.datetime, segments: Sequence[SegmentClock], *, byte_rate: int, answered_at: dt.datetime | None
) -> float | None:
    """Seconds from the start of the WAV download to the moment ``at``, within ``[0, duration]``;
    None for a recording without audio. ``answered_at``: when the call was answered, if known."""
    if not segments or byte_rate <= 0:
        return None
    position = 0.0  # seconds of WAV before the current segment's audio
    chosen: tuple[float, dt.datetime] | None = None
    for segment in segments:
        position += segment.gap_before_bytes / byte_rate
        started = max(segment.started_at, answered_at) if answered_at is not None else segment.started_at
        if chosen is None or started <= at:
            chosen = (position, started)
        position += segment.bytes / byte_rate
    assert chosen is not None
    audio_position, started = chosen
    offset = audio_position + (at - started).total_seconds()
    return round(min(max(offset, 0.0), position), 3)


@dataclass(frozen=True, slots=True)
class SpeechUpdate:
    seq: int
    occurred_at: dt.datetime
    payload: Any


def speech_start(role: str, seq: int, said_at: dt.datetime, updates: Iterable[SpeechUpdate]) -> dt.datetime:
    """When the utterance (``role``, stored as event ``seq`` at ``said_at``) began: the latest
    ``speech-update`` ``started`` of that role before it, at the earliest of that turn's copies; else
    ``said_at``."""
    started = [
        update
        for update in updates
        if update.seq < seq
        and isinstance(update.payload, dict)
        and update.payload.get("status") == "started"
        and update.payload.get("role") == role
    ]
    if not started:
        return said_at
    latest = max(started, key=lambda update: update.seq)
    turn = latest.payload.get("turn")
    copies = [update for update in started if turn is not None and update.payload.get("turn") == turn] or [latest]
    begin = min(update.occurred_at for update in copies)
    if begin > said_at or (said_at - begin).total_seconds() > MAX_UTTERANCE_SECONDS:
        return said_at
    return begin
