"""When to try a failed delivery again: pure functions, so the schedule is tested without a clock.

The schedule spreads attempts over hours (a receiver down for a deploy, an afternoon, a night still
gets its events) and jitters them so that many deliveries failing together — every event of an
endpoint that went down — do not come back as one burst when it returns. A receiver's own
``Retry-After`` wins over the schedule, within the schedule's bounds (neither a hammering
``Retry-After: 0`` nor a week-long one).
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from service.settings import DEFAULT_MAX_AGE_SECONDS, DEFAULT_RETRY_DELAYS


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, then abandon once the delivery is ``max_age`` old."""

    delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    max_age: dt.timedelta = dt.timedelta(seconds=DEFAULT_MAX_AGE_SECONDS)

    def __post_init__(self) -> None:
        if not self.delays or any(delay <= 0 for delay in self.delays):
            raise ValueError("retry delays must be a non-empty list of positive seconds")
        if self.max_age <= dt.timedelta(0):
            raise ValueError("the retry max age must be positive")

    @classmethod
    def from_seconds(cls, delays: Sequence[float], max_age_seconds: float) -> RetryPolicy:
        return cls(tuple(delays), dt.timedelta(seconds=max_age_seconds))

    @property
    def shortest(self) -> float:
        return min(self.delays)

    @property
    def longest(self) -> float:
        return max(self.delays)

    def backoff(self, failures: int, *, rand: Callable[[], float] = random.random) -> float:
        """Seconds to wait after the ``failures``-th failed attempt (1-based).

        Full jitter: uniform in ``(0, step]``, floored at the shortest step so that a retry is never
        immediate.
        """
        step = self.delays[min(max(failures, 1), len(self.delays)) - 1]
        return max(self.shortest, step * (1.0 - rand()))

    def next_attempt(
        self,
        *,
        failures: int,
        created_at: dt.datetime,
        now: dt.datetime,
        retry_after: float | None = None,
        rand: Callable[[], float] = random.random,
    ) -> dt.datetime | None:
        """When to try again, or ``None`` to give up (the next attempt would fall past ``max_age``)."""
        if retry_after is not None:
            delay = min(max(retry_after, self.shortest), self.longest)
        else:
            delay = self.backoff(failures, rand=rand)
        due = now + dt.timedelta(seconds=delay)
        if due > created_at + self.max_age:
            return None
        return due


def parse_retry_after(value: str | None, *, now: dt.datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or an HTTP date); ``None`` if
    absent or unreadable. A date in the past means "now" (0)."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():  # str.isdigit alone accepts "¹" and other non-ASCII digits
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive result means "-0000"
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - now).total_seconds())
