"""Rules after the call: the ``call.analyzed`` milestone and the ``notify`` action, end to end (the
simulator's scripted speech, the recording, the analytics worker, the rule engine, the outbox, a real
receiver on loopback) and across replays, interruptions and replicas."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from service.db.engine import Database
from service.db.models import CallAnalytics, RuleFiring, WebhookDelivery, WebhookEndpoint, utcnow
from service.rules import firings
from service.rules.files import load_rules_file
from service.rules.schema import RuleSetError
from service.simulator import CallScript, Utterance
from tests.deliveries.conftest import Receiver
from tests.harness import eventually, running_stack
from tests.rules.conftest import firings as call_firings
from tests.rules.conftest import wait_for_firings
from tests.rules.test_durability import ControlRecorder, add_calls, make_engine, rule

# assistant 0-1 s, nobody 1-5 s (4 s of dead air), customer 5-6 s, nobody until 6.5 s.
DEAD_AIR = CallScript(
    ring_after=0.1,
    answer_after=0.1,
    talk_seconds=6.5,
    partial_transcripts=False,
    turns=(
        Utterance("assistant", "Hello, how can I help?", at=0.0, duration=1.0),
        Utterance("user", "Sorry, I was away.", at=5.0, duration=1.0),
    ),
)
RULES = [
    {
        "name": "dead-air",
        "on": "call.analyzed",
        "if": "event.longestSilenceSeconds > 3",
        "action": {
            "type": "notify",
            "message": "{{ event.longestSilenceSeconds }} s of dead air with {{ call.customer.name }}",
        },
    },
    {"name": "loud", "on": "call.analyzed", "if": "event.longestSilenceSeconds > 30", "action": {"type": "notify"}},
    {"name": "apology", "on": "transcript", "if": 'event.role == "user"', "action": {"type": "notify"}},
]


def delivered(receiver: Receiver, kind: str) -> list[dict[str, Any]]:
    bodies = [json.loads(request.body) for request in receiver.requests]
    return [body["data"] for body in bodies if body["type"] == kind]


async def test_dead_air_notifies_a_supervisor_once(
    database_url: str, tmp_path: Path, write_rules: Any, receiver: Receiver, receiver_url: str
) -> None:
    rules = write_rules(RULES)
    async with running_stack(
        database_url,
        tmp_path,
        script=DEAD_AIR,
        pace=4,
        rules_file=rules,
        analytics_poll_seconds=0.2,
        webhook_allow_private=True,
    ) as stack:
        created = await stack.client.post(
            "/v1/webhook-endpoints", json={"url": receiver_url, "events": ["rule.notified", "call.analyzed"]}
        )
        assert created.status_code == 201, created.text
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        await stack.wait_for_recording(call_id)
        await eventually(lambda: len(delivered(receiver, "rule.notified")) >= 2, 20, what="two notifications")

        found = await wait_for_firings(stack, call_id, 2)
        by_rule = {firing["rule"]: firing for firing in found}
        assert set(by_rule) == {"dead-air", "apology"}, "the condition of loud is false: no firing"
        assert by_rule["dead-air"]["milestone"] == "call.analyzed"
        assert by_rule["dead-air"]["occurrence"] == "once"
        assert by_rule["dead-air"]["injectionId"] is None

        notified = {data["rule"]: data for data in delivered(receiver, "rule.notified")}
        assert set(notified) == {"dead-air", "apology"}
        dead_air = notified["dead-air"]
        silence = dead_air["event"]["longestSilenceSeconds"]
        assert abs(silence - 4.0) <= 0.5, "the scripted dead air, measured from the recording"
        assert dead_air["message"] == f"{silence} s of dead air with Ada"
        assert dead_air["callId"] == call_id
        assert dead_air["milestone"] == "call.analyzed"
        assert dead_air["firingId"] == by_rule["dead-air"]["id"]
        assert dead_air["event"]["type"] == "call.analyzed"
        assert dead_air["event"]["interruptions"] == {"customer": 0, "assistant": 0}
        assert dead_air["call"]["id"] == call_id
        assert dead_air["call"]["status"] == "ended"
        assert "monitor" not in json.dumps(dead_air)
        assert notified["apology"]["event"]["transcript"] == "Sorry, I was away."
        assert notified["apology"]["message"] is None
        assert stack.sim.control_received(call_id) == [], "a notification posts nothing to the call"
        # The endpoint's filter holds: rule.fired was not asked for.
        assert {json.loads(r.body)["type"] for r in receiver.requests} == {"rule.notified", "call.analyzed"}

        events = await stack.events(call_id)
        analyzed = [event for event in events if event["type"] == "call.analyzed"]
        assert len(analyzed) == 1
        assert analyzed[0]["source"] == "switchboard"
        assert analyzed[0]["payload"]["longestSilenceSeconds"] == silence
        notes = [event["payload"] for event in events if event["type"] == "rule.fired"]
        assert {(note["rule"], note["type"]) for note in notes} == {("dead-air", "notify"), ("apology", "notify")}

        # The analysis done again (a resumed recording is re-queued so): call.analyzed is journalled and
        # announced again, the rule does not fire again.
        db = Database(database_url)
        try:
            async with db.write() as session:
                await session.execute(
                    update(CallAnalytics).where(CallAnalytics.call_id == call_id).values(status="pending", attempts=0)
                )
        finally:
            await db.dispose()
        await eventually(lambda: len(delivered(receiver, "call.analyzed")) == 2, 20, what="analysed again")
        await asyncio.sleep(0.5)  # what a second firing would have taken
        assert len([e for e in await stack.events(call_id) if e["type"] == "call.analyzed"]) == 2
        assert len(await call_firings(stack, call_id)) == 2
        assert len(delivered(receiver, "rule.notified")) == 2


async def test_say_and_control_on_call_analyzed_are_refused_at_load(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path) as stack:
        body = {
            "rules": [
                {"name": "bye", "on": "call.analyzed", "say": "Bye."},
                {"name": "hang-up", "on": "call.analyzed", "action": {"type": "end-call"}},
                {"name": "tell", "on": "call.analyzed", "action": {"type": "notify", "message": "{{ call.id }}"}},
            ]
        }
        response = await stack.client.post("/v1/rules/validate", json=body)
        assert response.status_code == 200, response.text
        result = response.json()
        assert not result["valid"]
        assert [compiled["name"] for compiled in result["rules"]] == ["tell"]
        assert result["rules"][0]["action"] == {"type": "notify", "message": "{{ call.id }}"}
        assert [(error["rule"], error["field"]) for error in result["errors"]] == [
            ("bye", "say"),
            ("hang-up", "action.type"),
        ]
        assert "call is over" in result["errors"][0]["reason"]
        stored = await stack.client.post("/v1/rules", json=body["rules"][0])
        assert stored.status_code == 422, stored.text
        assert stored.json()["errors"][0]["field"] == "say"


def test_a_rules_file_with_a_say_on_call_analyzed_does_not_load(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - name: bye\n    on: call.analyzed\n    say: Bye.\n")
    with pytest.raises(RuleSetError) as raised:
        load_rules_file(path)
    [error] = raised.value.errors
    assert (error.rule, error.field, error.line) == ("bye", "say", 4)
    assert error.reason.startswith("a say cannot be heard on call.analyzed")


async def test_an_interrupted_notification_is_delivered_again_exactly_once(database_url: str) -> None:
    """The firing row committed, then the process died before notifying: the sweep of two replicas at
    once delivers it again, once (a control message in the same state is closed as failed instead)."""
    notify = rule(name="dead-air", on="call.analyzed", action={"type": "notify", "message": "{{ event.seconds }}"})
    say = rule(name="hello", on="call.answered", say="Hello.")
    recorder = ControlRecorder()
    first, db = make_engine(database_url, recorder, [notify, say])
    second, other_db = make_engine(database_url, recorder, [notify, say])
    [call_id] = await add_calls(db, 1, status="ended")
    long_ago = utcnow() - dt.timedelta(minutes=5)
    async with db.write() as session:
        session.add(WebhookEndpoint(url="https://ops.example.com/hooks", events=["rule.notified"], secret="whsec_x"))
        for name, action in (("dead-air", "notify"), ("hello", "say")):
            detail = {"milestone": name, "action": action, "occurrence": "analyzed", "event": {"seconds": 21}}
            await firings.insert_firing(
                session, rule=name, call_id=call_id, occurrence="once", status="firing", due_at=long_ago, detail=detail
            )
        await session.execute(update(RuleFiring).values(updated_at=long_ago))
    try:
        await asyncio.gather(first.sweep_stuck(), second.sweep_stuck())

        async def closed() -> dict[str, str] | None:
            async with db.read() as session:
                rows = dict((await session.execute(select(RuleFiring.rule_name, RuleFiring.status))).tuples().all())
            return rows if "firing" not in rows.values() else None

        assert await eventually(closed, 10, what="both firings closed") == {"dead-air": "fired", "hello": "failed"}
        await first.sweep_stuck()
        await asyncio.sleep(0.2)
        async with db.read() as session:
            deliveries = (await session.scalars(select(WebhookDelivery))).all()
        assert [delivery.event_type for delivery in deliveries] == ["rule.notified"]
        assert deliveries[0].payload["data"]["message"] == "21"
        assert deliveries[0].call_id == call_id
        assert recorder.received == [], "nothing is posted to the call"
    finally:
        await first.close(1)
        await second.close(1)
        await db.dispose()
        await other_db.dispose()
