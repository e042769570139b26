"""Durable timing and exactly-once: restarts, replicas racing for due firings, calls that ended meanwhile."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from service.calls.control import ControlChannel
from service.calls.events import NewEvent, append_events
from service.db.engine import Database
from service.db.models import Call, CallEvent, RuleFiring, utcnow
from service.metrics import Metrics
from service.rules import firings
from service.rules.engine import RuleEngine
from service.rules.schema import CompiledRule, compile_rule
from service.simulator import CallScript, SimulatorServer, VapiSimulator
from service.vapi.client import VapiClient
from tests.conftest import VAPI_KEY
from tests.harness import eventually, running_switchboard
from tests.rules.conftest import firings as call_firings
from tests.rules.conftest import says, wait_for_firings


def rule(**document: Any) -> CompiledRule:
    compiled = compile_rule(document)
    assert isinstance(compiled, CompiledRule), compiled
    return compiled


class ControlRecorder:
    """A fake control URL host (an *external* system): records every POST, optionally refuses some."""

    def __init__(self, *, delay: float = 0.0, refuse: int = 0) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.delay = delay
        self.refuse = refuse

    async def handle(self, request: httpx.Request) -> httpx.Response:
        if self.refuse > 0:
            self.refuse -= 1
            raise httpx.ConnectError("connection refused", request=request)
        await asyncio.sleep(self.delay)
        self.received.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, json={"ok": True})


def make_engine(
    url: str,
    recorder: ControlRecorder,
    rules: list[CompiledRule],
    *,
    poll_interval: float = 0.05,
    concurrency: int = 64,
) -> tuple[RuleEngine, Database]:
    db = Database(url)
    http = httpx.AsyncClient(transport=httpx.MockTransport(recorder.handle))
    vapi = VapiClient(http, base_url="http://vapi.test", api_key=None, public_key=None, timeout=5)
    engine = RuleEngine(
        db,
        ControlChannel(db, vapi),
        Metrics(),
        file_rules=rules,
        poll_interval=poll_interval,
        concurrency=concurrency,
    )
    return engine, db


async def add_calls(db: Database, count: int, *, status: str = "in-progress") -> list[str]:
    ids = [f"call-{n:03d}" for n in range(count)]
    async with db.write() as session:
        for call_id in ids:
            session.add(
                Call(id=call_id, status=status, control_url=f"http://control.test/{call_id}", customer={"name": "Ada"})
            )
    return ids


async def schedule(db: Database, rule_name: str, call_ids: list[str], *, due: dt.datetime) -> None:
    async with db.write() as session:
        for call_id in call_ids:
            detail = {"milestone": "call.answered", "occurrence": "status:in-progress", "event": {}}
            await firings.insert_firing(
                session,
                rule=rule_name,
                call_id=call_id,
                occurrence="once",
                status="scheduled",
                due_at=due,
                detail=detail,
            )


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.dispose()


async def test_two_replicas_never_fire_the_same_firing_twice(database_url: str, db: Database) -> None:
    later = rule(name="later", on="call.answered", delay="1s", say="Hi {{ call.customer.name }}.")
    recorder = ControlRecorder(delay=0.002)
    call_ids = await add_calls(db, 60)
    await schedule(db, "later", call_ids, due=utcnow() - dt.timedelta(seconds=1))
    (a, db_a), (b, db_b) = make_engine(database_url, recorder, [later]), make_engine(database_url, recorder, [later])
    try:
        claimed = await asyncio.gather(*(engine.fire_due_timers() for engine in (a, b, a, b)))
        await a.close(5)
        await b.close(5)
    finally:
        await db_a.dispose()
        await db_b.dispose()
    assert sum(claimed) == 60
    paths = sorted(path for path, _ in recorder.received)
    assert paths == sorted(f"/{call_id}" for call_id in call_ids), "every firing exactly once"
    assert {message["content"] for _, message in recorder.received} == {"Hi Ada."}
    async with db.read() as session:
        statuses = (await session.scalars(select(RuleFiring.status))).all()
    assert set(statuses) == {"fired"}


async def wait_idle(engine: RuleEngine, recorder: ControlRecorder, count: int, timeout: float = 5) -> None:
    await eventually(lambda: len(recorder.received) >= count, timeout, what=f"{count} control messages arrived")
    await asyncio.sleep(0.1)


async def test_the_same_occurrence_seen_by_two_replicas_fires_once(database_url: str, db: Database) -> None:
    hello = rule(name="hello", on="call.answered", say="Hello.")
    each = rule(name="each", on="transcript", say="Heard {{ event.transcript }}", once=False)
    recorder = ControlRecorder(delay=0.005)
    [call_id] = await add_calls(db, 1)
    async with db.write() as session:
        rows = await append_events(
            session,
            call_id,
            [
                NewEvent("switchboard", "call.status_changed", {"from": "ringing", "to": "in-progress"}),
                NewEvent("vapi", "transcript", {"role": "user", "transcriptType": "final", "transcript": "Hi there"}),
                NewEvent(
                    "listen", "transcript", {"role": "user", "transcriptType": "final", "transcript": "hi  there"}
                ),
            ],
        )
    (a, db_a), (b, db_b) = (
        make_engine(database_url, recorder, [hello, each]),
        make_engine(database_url, recorder, [hello, each]),
    )
    try:
        await a.start()
        await b.start()
        a.observe(call_id, rows)
        b.observe(call_id, rows)
        a.observe(call_id, rows)  # the same events again: still one firing per occurrence
        await wait_idle(a, recorder, 2)
        await a.close(5)
        await b.close(5)
    finally:
        await db_a.dispose()
        await db_b.dispose()
    heard, hello = sorted(message["content"] for _, message in recorder.received)
    assert hello == "Hello."
    assert heard in ("Heard Hi there", "Heard hi  there"), "whichever copy won, the utterance fired once"


async def test_a_delayed_firing_is_claimed_when_due_not_at_the_next_poll(database_url: str, db: Database) -> None:
    later = rule(name="later", on="call.answered", delay="300ms", say="Later.")
    sooner = rule(name="sooner", on="call.answered", delay="150ms", say="Sooner.")
    recorder = ControlRecorder()
    [call_id] = await add_calls(db, 1)
    engine, engine_db = make_engine(database_url, recorder, [later, sooner], poll_interval=30.0)
    try:
        await engine.start()
        async with db.write() as session:
            rows = await append_events(
                session,
                call_id,
                [NewEvent("switchboard", "call.status_changed", {"from": "ringing", "to": "in-progress"})],
            )
        engine.observe(call_id, rows)
        await wait_idle(engine, recorder, 2)
        await engine.close(5)
    finally:
        await engine_db.dispose()
    assert [message["content"] for _, message in recorder.received] == ["Sooner.", "Later."]
    async with db.read() as session:
        fired = (await session.execute(select(RuleFiring.rule_name, RuleFiring.due_at, RuleFiring.fired_at))).all()
    for name, due, fired_at in fired:
        assert fired_at is not None
        late = (fired_at - due).total_seconds()
        assert 0 <= late < 0.25, (name, late)  # the poll interval is 30 s: the timer woke for each


async def test_a_due_firing_of_an_ended_call_is_skipped_never_fired(database_url: str, db: Database) -> None:
    later = rule(name="later", on="call.answered", delay="1s", say="Too late.")
    recorder = ControlRecorder()
    ended = await add_calls(db, 1, status="ended")
    await schedule(db, "later", ended, due=utcnow() - dt.timedelta(seconds=5))
    await schedule(db, "removed-rule", ended, due=utcnow() - dt.timedelta(seconds=5))
    engine, engine_db = make_engine(database_url, recorder, [later])
    try:
        assert await engine.fire_due_timers() == 2
        await engine.close(5)
    finally:
        await engine_db.dispose()
    assert recorder.received == []
    async with db.read() as session:
        rows = (await session.scalars(select(RuleFiring).order_by(RuleFiring.rule_name))).all()
        events = (await session.scalars(select(CallEvent.type).where(CallEvent.call_id == ended[0]))).all()
    assert [(row.rule_name, row.status) for row in rows] == [("later", "skipped"), ("removed-rule", "skipped")]
    assert rows[0].error == "the call ended before the firing was due"
    assert list(events) == ["rule.skipped", "rule.skipped"]


async def test_refused_control_is_retried_briefly_then_journalled(database_url: str, db: Database) -> None:
    now_rule = rule(name="now", on="call.answered", say="Now.")
    ok, refused = await add_calls(db, 2)
    recorder = ControlRecorder(refuse=1)  # the first attempt is refused, the retry arrives
    engine, engine_db = make_engine(database_url, recorder, [now_rule])
    try:
        await engine.start()
        for call_id in (ok, refused):
            async with db.write() as session:
                rows = await append_events(
                    session,
                    call_id,
                    [NewEvent("switchboard", "call.status_changed", {"from": "ringing", "to": "in-progress"})],
                )
            if call_id == refused:
                await wait_idle(engine, recorder, 1)
                recorder.refuse = 10  # every attempt refused
            engine.observe(call_id, rows)
        await asyncio.sleep(1.5)
        await engine.close(5)
    finally:
        await engine_db.dispose()
    assert [path for path, _ in recorder.received] == [f"/{ok}"]
    async with db.read() as session:
        statuses = dict((await session.execute(select(RuleFiring.call_id, RuleFiring.status))).tuples().all())
        types = (await session.scalars(select(CallEvent.type).where(CallEvent.call_id == refused))).all()
    assert statuses == {ok: "fired", refused: "failed"}
    assert "injection.failed" in types
    assert "rule.failed" in types


async def test_an_interrupted_firing_is_closed_as_failed_never_retried(database_url: str, db: Database) -> None:
    [call_id] = await add_calls(db, 1)
    long_ago = utcnow() - dt.timedelta(minutes=5)
    async with db.write() as session:
        await firings.insert_firing(
            session, rule="x", call_id=call_id, occurrence="once", status="firing", due_at=long_ago, detail={}
        )
        row = await session.scalar(select(RuleFiring))
        assert row is not None
        row.updated_at = long_ago
    assert await firings.fail_stuck(db, now=utcnow()) == (1, [])
    async with db.read() as session:
        row = await session.scalar(select(RuleFiring))
    assert row is not None
    assert row.status == "failed"


RESTART_CALL = CallScript(ring_after=0.1, answer_after=0.1, talk_seconds=6.0, turns=())


async def test_a_restart_between_milestone_and_due_time_still_fires_once(
    database_url: str, tmp_path: Path, write_rules: Any
) -> None:
    rules = write_rules(
        [
            {"name": "after-restart", "on": "call.answered", "delay": "1.5s", "say": "Still here."},
            {"name": "at-two", "on": "call.elapsed", "at": "1.7s", "say": "Two seconds."},
        ]
    )
    simulator = VapiSimulator(api_key=VAPI_KEY, pace=1, script=RESTART_CALL)
    async with SimulatorServer(simulator) as sim_server:
        async with running_switchboard(database_url, tmp_path, sim_server, rules_file=rules) as first:
            call_id = await first.place_call()
            await simulator.wait_for_status(call_id, "in-progress")

            async def both_stored() -> bool:
                return len(await call_firings(first, call_id)) >= 2

            await eventually(both_stored, 5, interval=0.05)
            assert {f["status"] for f in await call_firings(first, call_id)} == {"scheduled"}
        await asyncio.sleep(1.3)  # both moments pass while no Switchboard runs
        assert says(first, call_id) == []
        async with running_switchboard(database_url, tmp_path, sim_server, rules_file=rules) as second:
            started = asyncio.get_running_loop().time()
            found = await wait_for_firings(second, call_id, 2, timeout=5)
            assert asyncio.get_running_loop().time() - started < 1.5, "overdue firings fire at once"
            await asyncio.sleep(0.5)
            assert sorted(says(second, call_id)) == ["Still here.", "Two seconds."]
            assert sorted(f["status"] for f in found) == ["fired", "fired"]


async def plan_then_fail(db: Database, engine: RuleEngine, call_id: str, events: list[NewEvent]) -> None:
    async with db.write() as session:
        call = await session.get(Call, call_id)
        assert call is not None
        await engine.plan(session, call, await append_events(session, call_id, events))
        raise RuntimeError("rolled back")


async def test_a_shutdown_delivers_the_firings_handed_over_before_it(database_url: str, db: Database) -> None:
    """Firings committed with their milestones but still queued, and due firings the timer claimed,
    while every firing slot is busy: a graceful close delivers them within its grace (they used to stay
    "firing" and be closed as failed by the next run's sweep, never spoken)."""
    hello = rule(name="hello", on="call.answered", say="Hello.")
    later = rule(name="later", on="call.answered", delay="1s", say="Hi.")
    recorder = ControlRecorder(delay=0.1)
    engine, engine_db = make_engine(database_url, recorder, [hello, later], concurrency=2)
    call_ids = await add_calls(db, 6)
    await schedule(db, "later", call_ids, due=utcnow() - dt.timedelta(seconds=1))
    try:
        await engine.start()
        answered = [NewEvent("switchboard", "call.status_changed", {"from": "ringing", "to": "in-progress"})]
        for call_id in call_ids:  # what the webhook writer does: plan in its transaction, dispatch after
            async with engine_db.write() as session:
                call = await session.get(Call, call_id)
                assert call is not None
                planned = await engine.plan(session, call, await append_events(session, call_id, answered))
            assert planned is not None
            engine.dispatch(planned)
        await eventually(lambda: len(recorder.received) >= 1, timeout=5)
        await engine.close(10)
    finally:
        await engine_db.dispose()
    async with db.read() as session:
        statuses = sorted((await session.execute(select(RuleFiring.rule_name, RuleFiring.status))).tuples())
    assert statuses == [("hello", "fired")] * 6 + [("later", "fired")] * 6
    assert len(recorder.received) == 12


async def test_a_webhook_milestone_commits_with_its_firing_and_a_rollback_leaves_neither(
    database_url: str, db: Database
) -> None:
    """``plan`` records firings in the transaction that stores the events: a crash after the commit
    cannot lose the firing (it is closed as failed by the sweep, never spoken twice), and a transaction
    that rolls back leaves no firing for events that were never stored."""
    hello = rule(name="hello", on="call.answered", say="Hello {{ call.customer.name }}.")
    later = rule(name="later", on="call.answered", delay="30s", say="Still there?")
    recorder = ControlRecorder()
    kept, rolled_back = await add_calls(db, 2)
    answered = [NewEvent("switchboard", "call.status_changed", {"from": "ringing", "to": "in-progress"})]
    engine, engine_db = make_engine(database_url, recorder, [hello, later])
    try:
        with pytest.raises(RuntimeError, match="rolled back"):
            await plan_then_fail(db, engine, rolled_back, answered)
        async with db.write() as session:
            call = await session.get(Call, kept)
            assert call is not None
            planned = await engine.plan(session, call, await append_events(session, kept, answered))
        assert planned is not None
        assert [recorded.decision.rule.name for recorded in planned.recorded if recorded.immediate] == ["hello"]
        async with db.read() as session:
            rows = (await session.scalars(select(RuleFiring).order_by(RuleFiring.rule_name))).all()
        assert [(row.call_id, row.rule_name, row.status) for row in rows] == [
            (kept, "hello", "firing"),  # committed before any POST: a crash here never speaks twice
            (kept, "later", "scheduled"),
        ]
        await engine.start()
        engine.dispatch(planned)
        await wait_idle(engine, recorder, 1)
        await engine.close(5)
    finally:
        await engine_db.dispose()
    assert [(path, message["content"]) for path, message in recorder.received] == [(f"/{kept}", "Hello Ada.")]
    async with db.read() as session:
        statuses = dict((await session.execute(select(RuleFiring.rule_name, RuleFiring.status))).tuples().all())
    assert statuses == {"hello": "fired", "later": "scheduled"}
