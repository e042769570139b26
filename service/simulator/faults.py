"""Fault injection settings. Durations here are real (wall-clock) seconds, not scaled by ``pace``:
they exercise the client's timeouts and backoff, which run in real time."""

from __future__ import annotations

from dataclasses import dataclass

ANY_CALL = "*"
"""Key of a fault that applies to every call."""


@dataclass(slots=True)
class ListenFault:
    """Refuse listen handshakes (HTTP ``status``) until ``refuse_until`` and/or for ``refuse_count`` more
    attempts; stall (accept, send nothing) until ``stall_until``. Times are ``loop.time()`` values."""

    refuse_until: float = 0.0
    refuse_count: int = 0
    refuse_status: int = 503
    stall_until: float = 0.0


@dataclass(slots=True)
class CountedFault:
    """Base of faults that apply to the next ``count`` requests (None: until cleared)."""

    count: int | None = None

    def consume(self) -> bool:
        """Use the fault once; False when it is used up."""
        if self.count is None:
            return True
        if self.count <= 0:
            return False
        self.count -= 1
        return True


@dataclass(slots=True)
class ControlFault(CountedFault):
    """Control requests wait ``delay`` seconds before being answered; with ``status`` they are then refused
    with that status and not acted on, otherwise they are acted on (after the delay)."""

    delay: float = 0.0
    status: int | None = None


@dataclass(slots=True)
class WebhookFault(CountedFault):
    """Server messages (of ``types``, or all) are not delivered: logged with an error, never POSTed."""

    types: frozenset[str] | None = None

    def matches(self, message_type: str) -> bool:
        """Whether this fault applies to a message of ``message_type``."""
        return self.types is None or message_type in self.types


@dataclass(slots=True)
class RestFault(CountedFault):
    """REST requests (``POST /call``, ``GET /call…``) wait ``delay`` seconds, then fail with ``status``
    when given."""

    delay: float = 0.0
    status: int | None = None
