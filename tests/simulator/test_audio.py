"""Synthetic audio: format, determinism, distinct frames, channel content."""

from __future__ import annotations

from array import array

import pytest

from service.simulator.audio import (
    FRAME_BYTES,
    STAMP_BYTES,
    FrameSource,
    call_tag,
    interleave,
    read_stamp,
    split_channels,
)


def _peak(mono: bytes) -> int:
    return max(abs(v) for v in array("h", mono))


def test_interleave_and_split_round_trip() -> None:
    left = bytes(range(64))
    right = bytes(range(64, 128))
    stereo = interleave(left, right)
    assert stereo[:8] == left[:2] + right[:2] + left[2:4] + right[2:4]
    assert split_channels(stereo) == (left, right)


def test_interleave_rejects_mismatched_channels() -> None:
    with pytest.raises(ValueError, match="equal length"):
        interleave(b"\x00\x00", b"\x00\x00\x00\x00")


def test_frames_are_20ms_stereo_and_stamped() -> None:
    source = FrameSource()
    tag = call_tag("call-1")
    frame = source.frame(tag, 7, user=False, assistant=False)
    assert len(frame) == FRAME_BYTES == 1280
    assert read_stamp(frame) == (7, tag)


def test_frames_are_distinct_and_deterministic() -> None:
    a, b = FrameSource(seed=3), FrameSource(seed=3)
    tag = call_tag("call-1")
    frames = [a.frame(tag, n, user=n % 2 == 0, assistant=n % 3 == 0) for n in range(500)]
    assert len(set(frames)) == len(frames)
    assert frames == [b.frame(tag, n, user=n % 2 == 0, assistant=n % 3 == 0) for n in range(500)]
    assert a.frame(call_tag("call-2"), 0, user=True, assistant=False) != frames[0]


def test_speaker_shows_on_its_own_channel() -> None:
    source = FrameSource()
    skip = STAMP_BYTES  # the stamp: inaudible, but not zeros
    quiet_customer, quiet_assistant = split_channels(source.frame(1, 5, user=False, assistant=False)[skip:])
    assert _peak(quiet_customer) == 0
    assert _peak(quiet_assistant) == 0
    customer, assistant = split_channels(source.frame(1, 5, user=True, assistant=False)[skip:])
    assert _peak(customer) > 500
    assert _peak(assistant) == 0
    customer, assistant = split_channels(source.frame(1, 5, user=False, assistant=True)[skip:])
    assert _peak(customer) == 0
    assert _peak(assistant) > 500
