"""Which milestones a batch of timeline events holds (pure), and what ``call``/``event`` a rule sees.

Milestones come from committed events: ``call.status_changed`` (and ``status-update: queued``) give the
``call.*`` milestones; final ``transcript`` and ``speech-update`` messages come from webhooks *and* the
listen socket; ``listen.connected`` from the listen session; ``injection.spoken`` from ``calls.speech``;
``user.interrupted`` and ``call.transferred`` from Vapi's ``user-interrupted`` and ``transfer-update``;
``call.analyzed`` from the analytics worker's ``call.analyzed`` event (one occurrence per call, however
often the recording is analysed again).
``call.elapsed`` and ``user.silent`` are timers the engine derives from ``call.answered`` and user speech.

Each occurrence has a key that is the same whichever path delivered it, so the unique
``(rule, call, occurrence)`` firing key turns the two copies into one firing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from service.calls.events import transcript_key
from service.db.models import Call
from service.rules.schema import STATUS_MILESTONES, CompiledRule


class EventLike(Protocol):
    """A stored timeline event, as the rules read it (a ``StoredEvent`` or a ``CallEvent`` row)."""

    @property
    def seq(self) -> int: ...
    @property
    def source(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def payload(self) -> Any: ...
    @property
    def received_at(self) -> dt.datetime: ...


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One occurrence of a milestone on one call."""

    call_id: str
    milestone: str
    key: str
    """Identity of the occurrence across delivery paths (``status:in-progress``, ``speech:stopped:user:3``)."""
    event: dict[str, Any]
    """What conditions and templates see as ``event``."""
    at: dt.datetime
    """When Switchboard received it: delays count from here."""


RELEVANT_TYPES = frozenset(
    {
        "call.status_changed",
        "status-update",
        "transcript",
        "speech-update",
        "listen.connected",
        "injection.spoken",
        "user-interrupted",
        "transfer-update",
        "call.analyzed",
    }
)


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def occurrences_from_events(call_id: str, events: Iterable[EventLike]) -> list[Occurrence]:
    """The milestone occurrences in a batch of committed events (in order; unrelated events skipped)."""
    batch = [event for event in events if event.type in RELEVANT_TYPES]
    changed = any(event.type == "call.status_changed" for event in batch)
    found: list[Occurrence] = []
    for event in batch:
        payload = event.payload if isinstance(event.payload, dict) else {}
        at = event.received_at
        base = {"source": event.source, "seq": event.seq, "occurredAt": _iso(at)}
        if event.type == "call.status_changed" and payload.get("to") in STATUS_MILESTONES:
            milestone = STATUS_MILESTONES[payload["to"]]
            body = {"type": milestone, "status": payload["to"], "previousStatus": payload.get("from"), **base}
            found.append(Occurrence(call_id, milestone, f"status:{payload['to']}", body, at))
        elif event.type == "status-update" and payload.get("status") == "queued" and not changed:
            body = {"type": "call.queued", "status": "queued", "previousStatus": None, **base}
            found.append(Occurrence(call_id, "call.queued", "status:queued", body, at))
        elif event.type == "transcript" and payload.get("transcriptType") == "final":
            role, text = payload.get("role"), payload.get("transcript")
            if isinstance(role, str) and isinstance(text, str):
                body = {"type": "transcript", "role": role, "transcript": text, **base}
                found.append(Occurrence(call_id, "transcript", transcript_key(role, text), body, at))
        elif event.type == "speech-update" and payload.get("status") in ("started", "stopped"):
            role, turn, status = payload.get("role"), payload.get("turn"), payload["status"]
            if not isinstance(role, str):
                continue
            milestone = f"speech.{status}"
            ident = (
                f"turn{turn}" if isinstance(turn, int) and not isinstance(turn, bool) else f"{event.source}{event.seq}"
            )
            body = {"type": milestone, "role": role, "turn": turn if isinstance(turn, int) else None, **base}
            found.append(Occurrence(call_id, milestone, f"speech:{status}:{role}:{ident}", body, at))
        elif event.type == "listen.connected" and event.source == "switchboard":
            segment = payload.get("segment")
            body = {"type": "listen.connected", "segment": segment, **base}
            found.append(Occurrence(call_id, "listen.connected", f"listen:{segment}", body, at))
        elif occurrence := _speech_and_transfer(call_id, event, payload, base):
            found.append(occurrence)
    return found


def _speech_and_transfer(
    call_id: str, event: EventLike, payload: dict[str, Any], base: dict[str, Any]
) -> Occurrence | None:
    """``injection.spoken`` (a say Vapi started speaking), ``call.analyzed`` (the conversation's analytics
    are complete), ``user.interrupted`` (the customer cut the assistant off: Vapi's ``user-interrupted``),
    ``call.transferred`` (Vapi's ``transfer-update``)."""
    at = event.received_at
    if event.type == "injection.spoken" and event.source == "switchboard":
        injection = payload.get("injectionId")
        body = {"type": "injection.spoken", "injectionId": injection, "content": payload.get("content"), **base}
        body["origin"] = payload.get("origin")
        return Occurrence(call_id, "injection.spoken", f"spoken:{injection}", body, at)
    if event.type == "call.analyzed" and event.source == "switchboard":
        # The analytics summary (contract section 13) as ``event``: event.longestSilenceSeconds, …
        body = {**payload, "type": "call.analyzed", **base}
        return Occurrence(call_id, "call.analyzed", "analyzed", body, at)
    if event.source != "vapi":
        return None
    if event.type == "user-interrupted":
        turn = payload.get("turnId")
        ident = turn if isinstance(turn, str) and turn else f"seq{event.seq}"
        return Occurrence(call_id, "user.interrupted", f"interrupted:{ident}", {"type": "user.interrupted", **base}, at)
    if event.type == "transfer-update":
        destination = payload.get("destination") if isinstance(payload.get("destination"), dict) else {}
        body = {"type": "call.transferred", "destination": destination, **base}
        return Occurrence(call_id, "call.transferred", f"transferred:{event.seq}", body, at)
    return None


def call_context(call: Call) -> dict[str, Any]:
    """``call`` for conditions and templates: the stored call, JSON-like (timestamps as ISO strings).

    Monitor URLs are capabilities and are never exposed to rules.
    """
    return {
        "id": call.id,
        "type": call.type,
        "status": call.status,
        "endedReason": call.ended_reason,
        "assistantId": call.assistant_id,
        "phoneNumberId": call.phone_number_id,
        "customer": dict(call.customer or {}),
        "metadata": dict(call.call_metadata or {}),
        "createdAt": _iso(call.created_at),
        "startedAt": _iso(call.started_at),
        "endedAt": _iso(call.ended_at),
    }


@dataclass(frozen=True, slots=True)
class FiringPlan:
    """How one occurrence of a rule's trigger starts a firing (see :func:`firing_plan`)."""

    key: str | None  # the exactly-once key; None: a transcript's, numbered among identical utterances
    due: dt.datetime | None  # None: at once (the condition is evaluated now); else a timed firing
    extra: dict[str, Any]  # what the timer needs besides the occurrence (user.silent: since when)


def firing_plan(rule: CompiledRule, occurrence: Occurrence) -> FiringPlan | None:
    """The firing ``occurrence`` starts for ``rule`` (one of the rule's triggers), or None when it starts
    none. One definition for the engine and the console's dry run: keys and due times.

    ``call.elapsed`` fires ``at`` (+ ``delay``) seconds after the answer, once per call; ``user.silent``
    starts a silence at the answer and at each user ``speech.stopped``; every other milestone fires
    at once or after ``delay``, once per call (``once``) or once per occurrence.
    """
    if rule.milestone == "call.elapsed":
        assert rule.at is not None
        return FiringPlan("elapsed", occurrence.at + dt.timedelta(seconds=rule.at + rule.delay), {})
    if rule.milestone == "user.silent":
        if occurrence.milestone != "call.answered" and occurrence.event.get("role") != "user":
            return None
        assert rule.silence is not None
        due = occurrence.at + dt.timedelta(seconds=rule.silence + rule.delay)
        key = "once" if rule.once else f"silent:{occurrence.key}"
        return FiringPlan(key, due, {"since": occurrence.at.isoformat()})
    per_occurrence = None if occurrence.milestone == "transcript" else occurrence.key
    delayed = occurrence.at + dt.timedelta(seconds=rule.delay) if rule.delay > 0 else None
    return FiringPlan("once" if rule.once else per_occurrence, delayed, {})


@dataclass(frozen=True, slots=True)
class SilenceVerdict:
    """What to do with a due ``user.silent`` firing: ``fire``, ``skip``, or ``wait`` until ``due``."""

    action: str
    since: dt.datetime | None = None
    due: dt.datetime | None = None


def silence_verdict(
    speech: list[tuple[str, dt.datetime]],
    *,
    since: dt.datetime,
    silence: dt.timedelta,
    now: dt.datetime,
    once: bool,
) -> SilenceVerdict:
    """Decide a due ``user.silent`` firing from the call's user speech (``(status, at)``, newest first).

    Silent since ``since`` (no user speech *started* after it): fire. Otherwise, with ``once: false`` the
    silence that follows the new speech is its own occurrence (scheduled by its ``speech.stopped``), so
    this one is skipped; with ``once: true`` the single firing moves: to ``for`` after the latest stop,
    or, while the customer is still speaking, to ``for`` from now (checked again then).
    """
    if not any(status == "started" and at > since for status, at in speech):
        return SilenceVerdict("fire")
    if not once:
        return SilenceVerdict("skip")
    latest_status, latest_at = speech[0]
    if latest_status == "started":
        return SilenceVerdict("wait", since=since, due=now + silence)
    return SilenceVerdict("wait", since=latest_at, due=latest_at + silence)


@dataclass(frozen=True, slots=True)
class DueDecision:
    """What a claimed timed firing does now: ``fire`` with ``event``, ``skip`` for ``reason``, or ``wait``
    (back in the queue until ``due``, with the updated ``detail``)."""

    action: str
    event: dict[str, Any] | None = None
    reason: str | None = None
    due: dt.datetime | None = None
    detail: dict[str, Any] | None = None


def decide_due(
    *,
    milestone: str,
    detail: dict[str, Any],
    now: dt.datetime,
    at: float | None,
    silence: float | None,
    once: bool,
    speech: list[tuple[str, dt.datetime]],
) -> DueDecision:
    """The ``event`` a due firing sees (``call.elapsed`` and ``user.silent`` happen *now*; a delayed
    milestone keeps the event it had), or why it must wait or be skipped (pure)."""
    if milestone == "call.elapsed":
        return DueDecision("fire", {"type": "call.elapsed", "seconds": at, "occurredAt": now.isoformat()})
    if milestone != "user.silent" or silence is None:
        return DueDecision("fire", dict(detail.get("event") or {}))
    since = dt.datetime.fromisoformat(detail.get("since") or now.isoformat())
    verdict = silence_verdict(speech, since=since, silence=dt.timedelta(seconds=silence), now=now, once=once)
    if verdict.action == "skip":
        return DueDecision("skip", reason="the customer spoke again")
    if verdict.action == "wait" and verdict.since is not None:
        return DueDecision("wait", due=verdict.due, detail={**detail, "since": verdict.since.isoformat()})
    event = {
        "type": "user.silent",
        "silentSeconds": round((now - since).total_seconds(), 3),
        "since": since.isoformat(),
        "occurredAt": now.isoformat(),
    }
    return DueDecision("fire", event)
