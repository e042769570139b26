"""Pure timing: where a moment of the call falls in its recording, and when an utterance began."""

from __future__ import annotations

import datetime as dt

from service.recordings.audio import Piece, stretch
from service.search.offsets import SegmentClock, SpeechUpdate, recording_offset, speech_start

T0 = dt.datetime(2026, 12, 5, 8, 0, tzinfo=dt.UTC)
RATE = 64_000  # 16 kHz stereo s16le


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def segment(opened: float, audio_seconds: float, *, gap: float = 0.0) -> SegmentClock:
    return SegmentClock(at(opened), int(audio_seconds * RATE), int(gap * RATE))


def offset(seconds: float, segments: list[SegmentClock], answered: float | None = None) -> float | None:
    answered_at = None if answered is None else at(answered)
    return recording_offset(at(seconds), segments, byte_rate=RATE, answered_at=answered_at)


def test_audio_starts_at_the_answer_when_the_socket_connected_before() -> None:
    # Connected at 0 while ringing; answered at 2 s: 8 s of audio from then.
    segments = [segment(0, 8)]
    assert offset(5, segments, answered=2) == 3.0
    assert offset(1, segments, answered=2) == 0.0, "before the audio: its start"
    assert offset(30, segments, answered=2) == 8.0, "after the end: the end"
    assert offset(5, segments) == 5.0, "answer unknown: the connection"
    assert offset(5, [segment(3, 8)], answered=2) == 2.0, "connected after the answer"


def test_gaps_are_counted_where_the_download_puts_them() -> None:
    # 0-4 s audio; lost 3 s; second connection's audio 7-12 s (its gap: 3 s of silence in the WAV).
    segments = [segment(0, 4), segment(7, 5, gap=3)]
    assert offset(2, segments, answered=0) == 2.0
    assert offset(8.5, segments, answered=0) == 4 + 3 + 1.5
    assert offset(5, segments, answered=0) == 5.0, "inside the gap: its silence"
    # A gap shorter than the time lost (the estimate): the second segment's own clock still decides.
    assert offset(8.5, [segment(0, 4), segment(7, 5, gap=1)], answered=0) == 4 + 1 + 1.5


def test_no_audio_no_offset() -> None:
    assert offset(1, []) is None


def update(seq: int, seconds: float, status: str = "started", role: str = "user", turn: int | None = 1) -> SpeechUpdate:
    payload = {"status": status, "role": role, **({"turn": turn} if turn is not None else {})}
    return SpeechUpdate(seq, at(seconds), payload)


def test_speech_starts_at_the_earliest_copy_of_the_latest_start_of_that_role() -> None:
    updates = [
        update(1, 0.5, turn=0),  # an earlier turn
        update(3, 2.10, role="assistant", turn=1),
        update(4, 2.30, turn=1),  # the listen copy, received later
        update(5, 2.20, turn=1),  # the webhook copy, stamped by Vapi
        update(6, 3.9, status="stopped"),
    ]
    assert speech_start("user", 8, at(4.0), updates) == at(2.2)
    assert speech_start("assistant", 8, at(4.0), updates) == at(2.1)
    assert speech_start("user", 2, at(1.0), updates) == at(0.5), "only updates before the utterance"


def test_without_a_plausible_start_the_utterance_time_is_used() -> None:
    assert speech_start("user", 8, at(4.0), []) == at(4.0)
    assert speech_start("user", 8, at(4.0), [update(3, 5.0)]) == at(4.0), "a start after the utterance"
    assert speech_start("user", 8, at(400.0), [update(3, 1.0)]) == at(400.0), "minutes before it"
    assert speech_start("user", 8, at(4.0), [update(3, 1.0, turn=None)]) == at(1.0), "no turn: that update"


def test_a_stretch_of_pieces_starts_inside_stored_audio() -> None:
    pieces = [Piece(10, "a"), Piece(6), Piece(8, "b")]
    assert stretch(pieces, 4, 20) == [Piece(6, "a", 4), Piece(6), Piece(4, "b", 0)]
    assert stretch(pieces, 17, 24) == [Piece(7, "b", 1)]
    assert stretch(pieces, 12, 14) == [Piece(2)]
    assert stretch(pieces, 30, 40) == []
