"""From per-frame voice decisions to a conversation's talk, silence, overlap and interruptions.

Pure functions. The input is one decision per 20 ms frame and channel: True (voice), False (no
voice), or None (a gap: audio lost, filled with silence in the download; neither talk nor silence).
Decisions are smoothed first, as a listener hears them: pauses shorter than ``MIN_PAUSE_SECONDS``
inside someone's speech are still their turn (breaths between words), and voice shorter than
``MIN_TALK_SECONDS`` is a click, not talk. Everything is then counted in whole frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

FRAME_SECONDS = 0.02
MIN_PAUSE_SECONDS = 0.3
MIN_TALK_SECONDS = 0.1

Decision = bool | None


def _runs(frames: Sequence[Decision]) -> list[tuple[Decision, int, int]]:
    """``(value, start, end)`` of each run of equal decisions."""
    runs: list[tuple[Decision, int, int]] = []
    start = 0
    for index in range(1, len(frames) + 1):
        if index == len(frames) or frames[index] != frames[start]:
            runs.append((frames[start], start, index))
            start = index
    return runs


def smooth(frames: Sequence[Decision]) -> list[Decision]:
    """Bridge short pauses inside speech, then drop voice too short to be talk (gaps are kept)."""
    out = list(frames)
    pause, blip = round(MIN_PAUSE_SECONDS / FRAME_SECONDS), round(MIN_TALK_SECONDS / FRAME_SECONDS)
    runs = _runs(out)
    for position, (value, start, end) in enumerate(runs):
        inside = 0 < position < len(runs) - 1
        if value is False and inside and end - start < pause and runs[position - 1][0] and runs[position + 1][0]:
            out[start:end] = [True] * (end - start)
    for value, start, end in _runs(out):
        if value is True and end - start < blip:
            out[start:end] = [False] * (end - start)
    return out


@dataclass(frozen=True, slots=True)
class ChannelActivity:
    talk_seconds: float
    silence_seconds: float
    turns: list[tuple[float, float]]  # (start, end) seconds of each stretch of talk


@dataclass(frozen=True, slots=True)
class Conversation:
    """The analytics of one call (contract section 13)."""

    customer: ChannelActivity
    assistant: ChannelActivity
    overlap_seconds: float
    longest_silence_seconds: float
    customer_interruptions: int  # the customer started while the assistant was talking
    assistant_interruptions: int
    analyzed_seconds: float  # audio heard (gaps excluded)

    @property
    def talk_ratio(self) -> float | None:
        """Customer talk over assistant talk; None when the assistant never talked."""
        if not self.assistant.talk_seconds:
            return None
        return round(self.customer.talk_seconds / self.assistant.talk_seconds, 3)


def _seconds(frames: int) -> float:
    return round(frames * FRAME_SECONDS, 2)


def _channel(frames: Sequence[Decision]) -> ChannelActivity:
    turns = [(_seconds(start), _seconds(end)) for value, start, end in _runs(frames) if value is True]
    return ChannelActivity(
        _seconds(sum(value is True for value in frames)), _seconds(sum(value is False for value in frames)), turns
    )


def _interruptions(speaker: Sequence[Decision], other: Sequence[Decision]) -> int:
    """How often ``speaker`` started talking while ``other`` was talking."""
    return sum(
        1
        for value, start, _ in _runs(speaker)
        if value is True and start > 0 and speaker[start - 1] is False and other[start] is True
    )


def conversation(customer: Sequence[Decision], assistant: Sequence[Decision]) -> Conversation:
    """The analytics of two channels' raw decisions (same length: one per frame of the recording)."""
    if len(customer) != len(assistant):
        raise ValueError("both channels must have one decision per frame")
    customer, assistant = smooth(customer), smooth(assistant)
    both = [a is True and b is True for a, b in zip(customer, assistant, strict=True)]
    # Neither talking; a gap (None on either side) breaks a silence: lost audio is not dead air.
    quiet = [a is False and b is False for a, b in zip(customer, assistant, strict=True)]
    longest = max((end - start for value, start, end in _runs(quiet) if value), default=0)
    return Conversation(
        customer=_channel(customer),
        assistant=_channel(assistant),
        overlap_seconds=_seconds(sum(both)),
        longest_silence_seconds=_seconds(longest),
        customer_interruptions=_interruptions(customer, assistant),
        assistant_interruptions=_interruptions(assistant, customer),
        analyzed_seconds=_seconds(sum(value is not None for value in customer)),
    )
