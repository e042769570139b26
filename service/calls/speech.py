"""Did Vapi speak it? A say's injection moves ``sent → spoken`` when Vapi says its speech started, and to
``interrupted`` when the customer cut in while it was being spoken (contract section 10).

What Vapi says (vapi-server-sdk 3.0.0 server messages): ``assistant.speechStarted``
(``ServerMessageAssistantSpeech``: ``text``, ``turn``, ``source`` — ``force-say`` for a say sent to the
control URL), ``user-interrupted`` (``ServerMessageUserInterrupted``), and the assistant's
``speech-update`` with status ``stopped`` (its speech ended: a later interruption is not this say's).

Two paths meet here. The webhook batch's :class:`~service.calls.writer.CallUnit` calls
:func:`follow_speech` for the events it records: the injections change in its transaction and the
``injection.spoken``/``injection.interrupted`` events join the call's change (the rules see them). A
say's speech may also start before its injection is recorded (Vapi answers the POST and starts speaking
at once; the webhook can commit first): :func:`catch_up` is called where the injection is recorded and
looks for that speech in the timeline.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.calls.events import NewEvent
from service.db.models import CallEvent, Injection, utcnow

Signal = Literal["spoken", "interrupted", "finished"]
FORCE_SAY = "force-say"
SIGNAL_TYPES = frozenset({"assistant.speechStarted", "user-interrupted", "speech-update"})
# An interruption reported this long after a say's speech stopped is still about that say.
INTERRUPTION_GRACE = dt.timedelta(seconds=1)
# How many of a call's latest says a speech message is matched against.
RECENT_SAYS = 20


def speech_signal(event: NewEvent) -> Signal | None:
    """What a timeline event says about the say being spoken, if anything (pure)."""
    if event.source != "vapi" or event.type not in SIGNAL_TYPES or not isinstance(event.payload, dict):
        return None
    payload = event.payload
    if event.type == "assistant.speechStarted":
        return "spoken" if payload.get("source") == FORCE_SAY else None
    if event.type == "user-interrupted":
        return "interrupted"
    if payload.get("role") == "assistant" and payload.get("status") == "stopped":
        return "finished"
    return None


@dataclass(frozen=True, slots=True)
class SayState:
    """A say injection as the matcher sees it."""

    id: Any
    status: str
    content: str
    speaking: bool  # its speech started and has not stopped
    ended_at: dt.datetime | None = None  # when its speech stopped


def _normal(text: object) -> str:
    return " ".join(str(text).split()).casefold()


def match_say(
    signal: Signal, payload: dict[str, Any], says: Sequence[SayState], *, at: dt.datetime | None = None
) -> SayState | None:
    """The say a speech signal is about (pure); ``says`` newest first, ``at``: when the signal came.

    ``spoken``: the sent say whose content is the spoken ``text`` (the oldest of equal ones: Vapi speaks
    queued says in order), else the latest sent say. ``finished``: the say being spoken, if one is.
    ``interrupted``: the say being spoken, else one whose speech stopped at most
    :data:`INTERRUPTION_GRACE` before (the stop the interruption caused may be reported first).
    """
    if signal == "finished":
        return next((say for say in says if say.speaking), None)
    if signal == "interrupted":
        speaking = next((say for say in says if say.speaking), None)
        if speaking is not None or at is None:
            return speaking
        return next(
            (
                say
                for say in says
                if say.status == "spoken" and say.ended_at is not None and at - say.ended_at <= INTERRUPTION_GRACE
            ),
            None,
        )
    sent = [say for say in says if say.status == "sent"]
    text = payload.get("text")
    if isinstance(text, str) and text.strip():
        same = [say for say in sent if _normal(say.content) == _normal(text)]
        if same:
            return same[-1]
    return sent[0] if sent else None


def _state(injection: Injection) -> SayState:
    return SayState(
        injection.id,
        injection.status,
        str((injection.body or {}).get("content", "")),
        injection.spoken_at is not None and injection.speech_ended_at is None,
        injection.speech_ended_at,
    )


def _moved(injection: Injection, signal: Signal, at: dt.datetime) -> NewEvent | None:
    """Apply ``signal`` to the injection; the timeline event it makes (none for ``finished``)."""
    payload = {"injectionId": str(injection.id), "origin": injection.origin, "content": injection.body.get("content")}
    if signal == "spoken":
        injection.status, injection.spoken_at = "spoken", at
        return NewEvent("switchboard", "injection.spoken", payload)
    injection.speech_ended_at = injection.speech_ended_at or at
    if signal == "interrupted":
        injection.status = "interrupted"
        return NewEvent("switchboard", "injection.interrupted", payload)
    return None


async def _recent_says(session: AsyncSession, call_id: str) -> list[Injection]:
    query = (
        select(Injection)
        .where(Injection.call_id == call_id, Injection.type == "say", Injection.status.in_(("sent", "spoken")))
        .order_by(Injection.created_at.desc(), Injection.id.desc())
        .limit(RECENT_SAYS)
    )
    return list((await session.scalars(query)).all())


async def follow_speech(session: AsyncSession, call_id: str, events: Sequence[NewEvent]) -> list[NewEvent]:
    """Move the call's say injections on the speech signals among ``events`` (in the caller's
    transaction); the events that records. One query, and only when a signal is there."""
    signals = [(signal, event) for event in events if (signal := speech_signal(event)) is not None]
    if not signals:
        return []
    says = await _recent_says(session, call_id)
    if not says:
        return []
    by_id = {say.id: say for say in says}
    made: list[NewEvent] = []
    for signal, event in signals:
        at = event.occurred_at or utcnow()
        matched = match_say(signal, event.payload, [_state(say) for say in says], at=at)
        if matched is not None:
            moved = _moved(by_id[matched.id], signal, at)
            if moved is not None:
                made.append(moved)
    return made


async def catch_up(session: AsyncSession, injection: Injection, *, since: dt.datetime) -> NewEvent | None:
    """For a say just recorded as sent: its speech may have started already (a ``force-say``
    ``assistant.speechStarted`` stored since ``since``, when the POST began, that no other say took).
    Marks it spoken then; the ``injection.spoken`` event to append."""
    if injection.type != "say" or injection.status != "sent":
        return None
    query = (
        select(CallEvent.type, CallEvent.payload, CallEvent.received_at)
        .where(
            CallEvent.call_id == injection.call_id,
            CallEvent.type.in_(("assistant.speechStarted", "injection.spoken")),
            CallEvent.received_at >= since,
        )
        .order_by(CallEvent.seq)
    )
    rows = (await session.execute(query)).all()
    taken = sum(1 for kind, _, _ in rows if kind == "injection.spoken")
    started = [
        (payload, at)
        for kind, payload, at in rows
        if kind == "assistant.speechStarted" and isinstance(payload, dict) and payload.get("source") == FORCE_SAY
    ]
    content = _normal(injection.body.get("content", ""))
    for payload, at in started[taken:]:  # the speeches no say took yet
        if _normal(payload.get("text", content)) == content:
            return _moved(injection, "spoken", at)
    return None
