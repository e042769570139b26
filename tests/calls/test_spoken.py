"""Did Vapi speak it? A say moves ``sent → spoken`` on Vapi's ``assistant.speechStarted`` (source
``force-say``) and to ``interrupted`` when the customer cuts in (``user-interrupted``); rules act on
``injection.spoken``, ``user.interrupted``, ``call.transferred`` and ``call.ended`` with an
``endedReason`` condition (contract section 10)."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from service.calls.events import NewEvent
from service.calls.speech import SayState, match_say, speech_signal
from service.db.models import Injection
from service.simulator import CallScript
from service.simulator.lifecycle import END_CALL_REASON
from tests.harness import Stack, eventually, running_stack

LONG_SAY = " ".join(["This is a very long announcement that keeps going."] * 6)  # 54 words: about 11 s
SCRIPT = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=60.0, turns=(), barge_in=True)


async def _events(stack: Stack, call_id: str, kind: str) -> list[dict[str, Any]]:
    response = await stack.client.get(f"/v1/calls/{call_id}/events", params={"type": kind})
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def _status(database_url: str, injection_id: str) -> tuple[str, Any]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            row = (
                await connection.execute(
                    select(Injection.status, Injection.spoken_at).where(Injection.id == _uuid(injection_id))
                )
            ).one()
    finally:
        await engine.dispose()
    return row[0], row[1]


def _uuid(value: str) -> uuid.UUID:
    return uuid.UUID(value)


async def _say(stack: Stack, call_id: str, content: str) -> str:
    response = await stack.client.post(f"/v1/calls/{call_id}/say", json={"content": content})
    assert response.status_code == 202, response.text
    assert response.json()["status"] in ("sent", "spoken")
    injection_id: str = response.json()["id"]
    return injection_id


async def test_a_say_becomes_spoken_and_an_interrupted_one_interrupted(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=4) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "in-progress", timeout=20)
        spoken = await _say(stack, call_id, "Your order has shipped.")

        async def spoken_event() -> list[dict[str, Any]]:
            return [
                e for e in await _events(stack, call_id, "injection.spoken") if e["payload"]["injectionId"] == spoken
            ]

        (event,) = await eventually(spoken_event, 15, what="the say was spoken")
        assert event["payload"]["content"] == "Your order has shipped."
        assert (await _status(database_url, spoken))[0] == "spoken"
        said = stack.sim.webhooks_sent(call_id, "assistant.speechStarted")
        assert said[-1]["body"]["message"]["source"] == "force-say"

        long_one = await _say(stack, call_id, LONG_SAY)
        await eventually(lambda: _is(database_url, long_one, "spoken"), 15, what="the long say started being spoken")
        # The customer speaks over it: Vapi cuts the assistant off and says user-interrupted.
        stack.sim.customer_says(call_id, "Stop, please.")
        await eventually(lambda: _is(database_url, long_one, "interrupted"), 15, what="the say was interrupted")
        interrupted = await _events(stack, call_id, "injection.interrupted")
        assert [e["payload"]["injectionId"] for e in interrupted] == [long_one]
        assert (await _status(database_url, spoken))[0] == "spoken", "the finished say stays spoken"
        stack.sim.end_call(call_id)


async def _is(database_url: str, injection_id: str, status: str) -> bool:
    return (await _status(database_url, injection_id))[0] == status


def _id(say: SayState | None) -> Any:
    assert say is not None
    return say.id


def test_speech_signals_and_the_say_they_are_about() -> None:
    started = NewEvent("vapi", "assistant.speechStarted", {"text": "B", "source": "force-say"})
    assert speech_signal(started) == "spoken"
    assert speech_signal(dataclasses.replace(started, payload={"text": "B", "source": "model"})) is None
    assert speech_signal(NewEvent("vapi", "user-interrupted", {})) == "interrupted"
    assert speech_signal(NewEvent("vapi", "speech-update", {"role": "assistant", "status": "stopped"})) == "finished"
    assert speech_signal(NewEvent("vapi", "speech-update", {"role": "user", "status": "stopped"})) is None
    assert speech_signal(NewEvent("listen", "user-interrupted", {})) is None

    says = [  # newest first
        SayState(3, "sent", "A", speaking=False),
        SayState(2, "sent", "B", speaking=False),
        SayState(1, "spoken", "C", speaking=True),
    ]
    assert _id(match_say("spoken", {"text": " b "}, says)) == 2  # by its text, whatever the order
    assert _id(match_say("spoken", {"text": "unknown"}, says)) == 3  # else the latest sent
    assert _id(match_say("spoken", {}, says)) == 3
    assert _id(match_say("interrupted", {}, says)) == 1  # the one being spoken
    assert match_say("interrupted", {}, [SayState(1, "spoken", "C", speaking=False)]) is None
    assert match_say("spoken", {"text": "A"}, [SayState(1, "spoken", "A", speaking=True)]) is None


def test_an_interruption_reported_after_the_stop_is_still_the_say_s() -> None:
    import datetime as dt

    stopped = dt.datetime(2026, 12, 5, 9, tzinfo=dt.UTC)
    says = [SayState(1, "spoken", "C", speaking=False, ended_at=stopped)]
    assert _id(match_say("interrupted", {}, says, at=stopped + dt.timedelta(milliseconds=300))) == 1
    assert match_say("interrupted", {}, says, at=stopped + dt.timedelta(seconds=5)) is None


RULES = [
    {
        "name": "after-spoken",
        "on": "injection.spoken",
        "action": {
            "type": "add-message",
            "message": {"role": "system", "content": "Said: {{ event.content }}"},
            "triggerResponseEnabled": False,
        },
    },
    {
        "name": "on-interruption",
        "on": "user.interrupted",
        "action": {"type": "append-context", "kind": "instructions", "content": "The customer cut in."},
    },
    {"name": "on-transfer", "on": "call.transferred", "action": {"type": "end-call"}},
    # The transfer rule's end-call ends the call: Vapi's reason for that (the simulator's END_CALL_REASON).
    {
        "name": "hung-up",
        "on": "call.ended",
        "if": f'call.endedReason == "{END_CALL_REASON}"',
        "action": {"type": "end-call"},
    },
    {
        "name": "timed-out",
        "on": "call.ended",
        "if": 'call.endedReason == "silence-timed-out"',
        "action": {"type": "end-call"},
    },
]


async def test_rules_act_on_spoken_interrupted_transferred_and_why_a_call_ended(
    database_url: str, tmp_path: Path
) -> None:
    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=4) as stack:
        for rule in RULES:
            response = await stack.client.put(f"/v1/rules/{rule['name']}", json=rule)
            assert response.status_code in (200, 201), response.text
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "in-progress", timeout=20)
        await _say(stack, call_id, LONG_SAY)

        def received(kind: str) -> list[dict[str, Any]]:
            return [m for m in stack.sim.control_received(call_id) if m["type"] == kind]

        added = await eventually(lambda: received("add-message"), 15, what="the injection.spoken rule fired")
        assert added[0]["message"]["content"] == f"Said: {LONG_SAY}"
        stack.sim.customer_says(call_id, "Stop, please.")
        await eventually(lambda: received("append-context"), 15, what="the user.interrupted rule fired")
        transfer = {"type": "transfer", "destination": {"type": "number", "number": "+14155550999"}}
        assert (await stack.client.post(f"/v1/calls/{call_id}/control", json=transfer)).status_code == 202
        ended = await stack.sim.wait_for_status(call_id, "ended", timeout=20)
        assert ended.ended_reason == END_CALL_REASON

        async def firings() -> dict[str, str] | None:
            data = (await stack.client.get(f"/v1/calls/{call_id}/firings")).json()["data"]
            found = {firing["rule"]: firing["status"] for firing in data}
            settled = not {"pending", "scheduled", "firing"} & set(found.values())  # "firing": its POST is out
            return found if {"on-transfer", "hung-up"} <= set(found) and settled else None

        found = await eventually(firings, 20, what="the transfer and end rules fired")
        assert found["after-spoken"] == "fired"
        assert found["on-interruption"] == "fired"
        assert "timed-out" not in found or found["timed-out"] != "fired"  # its condition is false
        assert found["hung-up"] in ("fired", "skipped")  # on call.ended nothing can be sent any more
