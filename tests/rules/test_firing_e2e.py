"""Rules end to end through the Vapi simulator: real uvicorn, real databases (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from vapi.types.client_inbound_message_say import ClientInboundMessageSay

from service.simulator import CallScript, Utterance
from tests.harness import running_stack
from tests.rules.conftest import firings, says, wait_for_firings

LONG_CALL = CallScript(ring_after=0.1, answer_after=0.1, talk_seconds=6.0, turns=())


def _at(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


async def test_answered_with_delay_fires_once_at_the_right_time(
    database_url: str, tmp_path: Path, write_rules: Any
) -> None:
    rules = write_rules(
        [
            {"name": "greeting", "on": "call.answered", "delay": "600ms", "say": "Hello {{ call.customer.name }}."},
            {
                "name": "two-seconds",
                "on": "call.elapsed",
                "at": "1.5s",
                "say": "Still there, {{ call.metadata.crmId }}?",
            },
            {"name": "not-in-ca", "on": "call.answered", "if": 'call.metadata.region == "CA"', "say": "CA only."},
        ]
    )
    async with running_stack(database_url, tmp_path, script=LONG_CALL, pace=1, rules_file=rules) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "in-progress")
        answered = dt.datetime.now(dt.UTC)
        found = await wait_for_firings(stack, call_id, 2)
        by_rule = {firing["rule"]: firing for firing in found}
        assert set(by_rule) == {"greeting", "two-seconds"}
        greeting, elapsed = by_rule["greeting"], by_rule["two-seconds"]
        # Both are due after the one answered milestone Switchboard received: 0.6 s and 1.5 s after it.
        assert (_at(elapsed["dueAt"]) - _at(greeting["dueAt"])).total_seconds() == pytest.approx(0.9, abs=0.001)
        transit = (_at(greeting["dueAt"]) - answered).total_seconds() - 0.6  # the webhook's way here
        assert -0.2 <= transit <= 1.0, transit
        for firing in (greeting, elapsed):  # claimed when due, not at the timer's next poll
            late = (_at(firing["firedAt"]) - _at(firing["dueAt"])).total_seconds()
            assert 0 <= late <= 0.5, (firing["rule"], late)
        await asyncio.sleep(0.3)
        assert sorted(says(stack, call_id)) == ["Hello Ada.", "Still there, crm-7?"]
        for message in stack.sim.control_received(call_id):
            ClientInboundMessageSay.model_validate(message)
        events = [event["type"] for event in await stack.events(call_id)]
        assert events.count("rule.fired") == 2
        assert events.count("injection.sent") == 2
        assert {firing["status"] for firing in await firings(stack, call_id)} == {"fired"}


TALKY = CallScript(
    ring_after=0.1,
    answer_after=0.1,
    talk_seconds=4.0,
    turns=(
        Utterance("user", "Yes.", at=0.2),
        Utterance("user", "I want to cancel my plan.", at=0.7),
        Utterance("user", "Yes.", at=1.8),
        Utterance("user", "Yes.", at=2.3),
    ),
)


async def test_transcripts_fire_on_match_once_per_occurrence(
    database_url: str, tmp_path: Path, write_rules: Any
) -> None:
    user = 'event.role == "user" && '
    rules = write_rules(
        [
            {
                "name": "cancel",
                "on": "transcript",
                "if": user + 'event.transcript.matches("(?i)\\\\bcancel")',
                "say": "Wait!",
            },
            {
                "name": "refund",
                "on": "transcript",
                "if": user + 'event.transcript.contains("refund")',
                "say": "Refund.",
            },
            {"name": "yes-once", "on": "transcript", "if": user + 'event.transcript == "Yes."', "say": "Once."},
            {
                "name": "yes-each",
                "on": "transcript",
                "if": user + 'event.transcript == "Yes."',
                "say": "Each.",
                "once": False,
            },
            {"name": "missing", "on": "transcript", "if": 'event.nothing == "x"', "say": "Never."},
        ]
    )
    async with running_stack(database_url, tmp_path, script=TALKY, pace=1, rules_file=rules) as stack:
        call_id = await stack.place_call()
        await wait_for_firings(stack, call_id, 5)
        await asyncio.sleep(0.6)  # the last utterance's copies (webhook, listen) have arrived by now
        found = await firings(stack, call_id)
        fired = sorted(firing["rule"] for firing in found if firing["status"] == "fired")
        assert fired == ["cancel", "yes-each", "yes-each", "yes-each", "yes-once"], found
        assert sorted(says(stack, call_id)) == ["Each.", "Each.", "Each.", "Once.", "Wait!"]
        # Both paths delivered every final transcript; each utterance is still one occurrence.
        events = await stack.events(call_id)
        sources = {event["source"] for event in events if event["type"] == "transcript"}
        assert sources == {"vapi", "listen"}


SILENCE_THEN_QUIET = CallScript(
    ring_after=0.1,
    answer_after=0.1,
    talk_seconds=3.5,
    turns=tuple(Utterance("user", "Okay.", at=0.3 + 0.6 * n, duration=0.4) for n in range(3)),
)


async def test_user_silent_fires_after_the_silence_only(database_url: str, tmp_path: Path, write_rules: Any) -> None:
    rules = write_rules(
        [
            {"name": "nudge", "on": "user.silent", "for": "1s", "say": "Are you still there?"},
        ]
    )
    async with running_stack(database_url, tmp_path, script=SILENCE_THEN_QUIET, pace=1, rules_file=rules) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "in-progress")
        answered = dt.datetime.now(dt.UTC)
        found = await wait_for_firings(stack, call_id, 1)
        nudge = next(firing for firing in found if firing["rule"] == "nudge")
        # The customer speaks until ~1.9 s after answer; silence is measured from there.
        late = (_at(nudge["firedAt"]) - answered).total_seconds()
        assert 2.7 <= late <= 3.6, late
        await asyncio.sleep(0.3)
        assert says(stack, call_id) == ["Are you still there?"]
        assert [firing["status"] for firing in await firings(stack, call_id)] == ["fired"], "one silence, one firing"
