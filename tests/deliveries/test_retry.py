"""The retry schedule and Retry-After parsing: pure functions, no clock."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.deliveries.retry import RetryPolicy, parse_retry_after
from service.settings import DEFAULT_RETRY_DELAYS

NOW = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)


def test_backoff_without_jitter_follows_the_schedule_then_repeats_the_last_step() -> None:
    policy = RetryPolicy()
    no_jitter = [policy.backoff(failures, rand=lambda: 0.0) for failures in range(1, 13)]
    assert no_jitter[:9] == list(DEFAULT_RETRY_DELAYS)
    assert no_jitter[9:] == [DEFAULT_RETRY_DELAYS[-1]] * 3


def test_default_schedule_spreads_over_hours() -> None:
    assert sum(DEFAULT_RETRY_DELAYS) > 10 * 3600
    assert RetryPolicy().max_age == dt.timedelta(hours=24)


@given(failures=st.integers(min_value=-3, max_value=50), rand=st.floats(min_value=0.0, max_value=0.999999))
def test_full_jitter_stays_between_the_shortest_step_and_the_step(failures: int, rand: float) -> None:
    policy = RetryPolicy()
    step = DEFAULT_RETRY_DELAYS[min(max(failures, 1), len(DEFAULT_RETRY_DELAYS)) - 1]
    assert policy.shortest <= policy.backoff(failures, rand=lambda: rand) <= step


def test_retry_after_wins_but_is_clamped_to_the_schedule() -> None:
    policy = RetryPolicy(delays=(5, 60, 600))
    created = NOW

    def delay(retry_after: float) -> float:
        due = policy.next_attempt(failures=1, created_at=created, now=NOW, retry_after=retry_after, rand=lambda: 0.0)
        assert due is not None
        return (due - NOW).total_seconds()

    assert delay(42) == 42
    assert delay(0) == 5  # never hammer
    assert delay(7 * 24 * 3600) == 600  # never wait longer than the longest step


def test_gives_up_once_the_next_attempt_would_pass_max_age() -> None:
    policy = RetryPolicy(delays=(60,), max_age=dt.timedelta(hours=1))
    created = NOW
    late = NOW + dt.timedelta(minutes=59, seconds=30)
    assert policy.next_attempt(failures=3, created_at=created, now=late, rand=lambda: 0.0) is None
    due = policy.next_attempt(failures=3, created_at=created, now=NOW + dt.timedelta(minutes=30), rand=lambda: 0.0)
    assert due == NOW + dt.timedelta(minutes=31)


@pytest.mark.parametrize("delays", [(), (5, 0), (-1,)])
def test_a_schedule_needs_positive_steps(delays: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="positive"):
        RetryPolicy(delays=delays)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("120", 120.0),
        (" 3 ", 3.0),
        ("0", 0.0),
        ("Thu, 26 Nov 2026 12:00:30 GMT", 30.0),
        ("Thu, 26 Nov 2026 11:00:00 GMT", 0.0),  # already past
        ("-5", None),
        ("1.5", None),
        ("\u00b9", None),  # a digit to str.isdigit, not to HTTP
        ("soon", None),
        ("Thu, 99 Nov 2026 12:00:30 GMT", None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


@given(st.text(max_size=40))
def test_parse_retry_after_never_raises(header: str) -> None:
    result = parse_retry_after(header, now=NOW)
    assert result is None or result >= 0
