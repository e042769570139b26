"""Durations written by people: ``500ms``, ``0.5s``, ``90s``, ``2m``, ``12h``, ``90d`` (shared by the rules
and the retention setting)."""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(?P<number>[-+]?(?:\d+(?:\.\d*)?|\.\d+))\s*(?P<unit>ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object, *, maximum: float | None = None, maximum_text: str = "") -> float:
    """Seconds from a number or a string with a unit (``ms``, ``s``, ``m``, ``h``, ``d``; none: seconds).

    Refuses (``ValueError``, with a message for people) anything else, negative or non-finite values,
    and values over ``maximum`` (described as ``maximum_text``).
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number of seconds or a string like '500ms', '90s', '2m', got {value!r}")
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError(f"{value!r} is not a duration: use seconds or '500ms', '90s', '2m', '12h', '90d'")
        seconds = float(match["number"]) * _UNIT_SECONDS[match["unit"]]
    else:
        seconds = float(value)
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        raise ValueError("the duration must be a finite number")
    if seconds < 0:
        raise ValueError(f"the duration must not be negative (got {value!r})")
    if maximum is not None and seconds > maximum:
        raise ValueError(f"the duration must not exceed {maximum_text or f'{maximum:g} seconds'}")
    return round(seconds, 6)
