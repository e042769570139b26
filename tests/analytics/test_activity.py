"""Pure arithmetic of a conversation: frames of voice decisions to talk, silence, overlap, interruptions."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.analytics.activity import Decision, conversation, smooth


def frames(*spans: tuple[Decision, float]) -> list[Decision]:
    """Decisions from (value, seconds) spans of 20 ms frames."""
    return [value for value, seconds in spans for _ in range(round(seconds / 0.02))]


def test_talk_silence_overlap_and_interruptions_both_ways() -> None:
    # assistant 0-2, customer 1.5-3.5 (barges in), silence 3.5-6.5, assistant 6.5-8, customer 11-13, assistant 12-13.5
    assistant = frames((True, 2), (False, 4.5), (True, 1.5), (False, 4), (True, 1.5), (False, 1))
    customer = frames((False, 1.5), (True, 2), (False, 7.5), (True, 2), (False, 1.5))
    result = conversation(customer, assistant)
    assert result.customer.talk_seconds == 4.0
    assert result.assistant.talk_seconds == 5.0
    assert result.customer.silence_seconds == 10.5
    assert result.assistant.silence_seconds == 9.5
    assert result.overlap_seconds == 1.5
    assert result.longest_silence_seconds == 3.0
    assert result.customer_interruptions == 1
    assert result.assistant_interruptions == 1
    assert result.talk_ratio == 0.8
    assert result.customer.turns == [(1.5, 3.5), (11.0, 13.0)]
    assert result.analyzed_seconds == 14.5


def test_short_pauses_are_still_a_turn_and_clicks_are_not_talk() -> None:
    customer = frames((False, 1), (True, 1), (False, 0.2), (True, 1), (False, 1), (True, 0.06), (False, 1))
    assistant = frames((False, 5.26))
    result = conversation(customer, assistant)
    assert result.customer.turns == [(1.0, 3.2)]
    assert result.customer.talk_seconds == 2.2
    assert result.talk_ratio is None, "the assistant never talked"


def test_gaps_are_neither_talk_nor_silence_and_break_a_silence() -> None:
    customer = frames((True, 1), (False, 2), (None, 10), (False, 2), (True, 1))
    assistant = frames((False, 3), (None, 10), (False, 3))
    result = conversation(customer, assistant)
    assert result.longest_silence_seconds == 2.0, "2 s, gap, 2 s: not 14 s"
    assert result.customer.silence_seconds == 4.0
    assert result.assistant.silence_seconds == 6.0
    assert result.analyzed_seconds == 6.0


def test_a_start_while_the_other_talks_right_after_a_gap_is_no_interruption() -> None:
    customer = frames((None, 1), (True, 1))
    assistant = frames((True, 2))
    assert conversation(customer, assistant).customer_interruptions == 0


@given(st.lists(st.sampled_from([True, False, None]), max_size=300))
def test_smoothing_keeps_length_and_gaps(decisions: list[Decision]) -> None:
    smoothed = smooth(decisions)
    assert len(smoothed) == len(decisions)
    assert [value is None for value in smoothed] == [value is None for value in decisions]


@given(
    st.lists(st.sampled_from([True, False, None]), max_size=200), st.lists(st.sampled_from([True, False]), max_size=200)
)
def test_totals_add_up(customer: list[Decision], assistant: list[Decision]) -> None:
    size = min(len(customer), len(assistant))
    result = conversation(customer[:size], assistant[:size])
    heard = result.customer.talk_seconds + result.customer.silence_seconds
    assert abs(heard - result.analyzed_seconds) < 0.011
    assert result.overlap_seconds <= min(result.customer.talk_seconds, result.assistant.talk_seconds)
