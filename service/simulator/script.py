"""What happens on a simulated call, and when: a pure description, no I/O.

Times are *call seconds* (what a real call would take); the simulator divides them by its ``pace``.
Turn offsets count from the moment the call is answered (status ``in-progress``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["user", "assistant"]

SECONDS_PER_WORD = 0.2
"""Speaking rate of simulated speech (fast, so that short test scripts hold a few turns)."""

MIN_SPEECH_SECONDS = 0.4


def speech_seconds(text: str) -> float:
    """How long it takes to say ``text``: proportional to its words, never shorter than 0.4 s."""
    return max(MIN_SPEECH_SECONDS, SECONDS_PER_WORD * len(text.split()))


@dataclass(frozen=True, slots=True)
class Utterance:
    """One thing said by the customer (``user``) or the assistant, starting ``at`` seconds after answer."""

    role: Role
    text: str
    at: float
    duration: float | None = None
    """Seconds of speech; derived from the number of words when not given."""

    @property
    def seconds(self) -> float:
        """Length of the utterance in call seconds."""
        return self.duration if self.duration is not None else speech_seconds(self.text)


DEFAULT_TURNS: tuple[Utterance, ...] = (
    Utterance("assistant", "Hi, this is Ava from Acme. How can I help?", at=0.2),
    Utterance("user", "I have a question about my bill.", at=2.2),
    Utterance("user", "Actually, I want to cancel my plan.", at=3.9),
)


@dataclass(frozen=True, slots=True)
class CallScript:
    """The scripted lifecycle of one call.

    queued → ringing after ``ring_after`` → in-progress after ``answer_after`` more (or, when ``answer`` is
    false, ended with ``customer-did-not-answer`` after ``no_answer_after``) → ``turns`` → ended after
    ``talk_seconds`` of conversation with ``ended_reason``.
    """

    ring_after: float = 1.0
    answer_after: float = 1.0
    talk_seconds: float = 6.0
    ended_reason: str = "customer-ended-call"
    turns: tuple[Utterance, ...] = DEFAULT_TURNS
    answer: bool = True
    no_answer_after: float = 3.0
    hang_at: float | None = None
    """Emit a ``hang`` server message this many seconds after answer (None: never)."""
    partial_transcripts: bool = True
    send_queued_status: bool = False
    """Also send a ``status-update`` for ``queued`` right after the call is created."""
    barge_in: bool = False
    """The customer speaking while the assistant speaks cuts it off, as Vapi does: its speech stops
    there and ``user-interrupted`` is sent (vapi-server-sdk 3.0.0 ``ServerMessageUserInterrupted``)."""
