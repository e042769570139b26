"""Catching up: calls Vapi created while Switchboard was stopped (or without its webhooks) are listed
with ``GET /call?createdAtGe=<last seen createdAt>`` at start-up and on a timer, page by page, and
imported through the call writer."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from service.calls import catchup
from service.calls.catchup import CatchUp, Window
from service.calls.changes import CallChanges
from service.calls.writer import CallWriter
from service.db.engine import Database
from service.db.models import Call
from service.simulator import CallScript, SimulatorServer, VapiSimulator
from service.vapi.client import VapiClient
from tests.conftest import VAPI_KEY
from tests.harness import eventually, running_switchboard

SCRIPT = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=1.0, turns=())


async def _placed_elsewhere(simulator: SimulatorServer, count: int) -> list[str]:
    """Calls placed at Vapi by someone else: no server of Switchboard's, so no webhook reaches it."""
    ids = []
    async with httpx.AsyncClient(base_url=simulator.base_url, headers={"Authorization": f"Bearer {VAPI_KEY}"}) as vapi:
        for index in range(count):
            body = {
                "assistantId": "asst-other",
                "phoneNumberId": "pn-other",
                "customer": {"number": f"+1415555020{index}"},
            }
            response = await vapi.post("/call", json=body)
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
    return ids


async def _ids(client: httpx.AsyncClient) -> set[str]:
    return {call["id"] for call in (await client.get("/v1/calls", params={"limit": 100})).json()["data"]}


async def test_calls_placed_while_stopped_appear_after_start_up(database_url: str, tmp_path: Path) -> None:
    sim = VapiSimulator(api_key=VAPI_KEY, pace=8, script=SCRIPT)
    async with SimulatorServer(sim) as simulator:
        async with running_switchboard(database_url, tmp_path, simulator, vapi_catch_up_seconds=3600) as stack:
            seen = await stack.place_call()
            await eventually(lambda: _known(stack.client, seen), 10)
        missed = await _placed_elsewhere(simulator, 3)  # Switchboard is down
        async with running_switchboard(database_url, tmp_path, simulator, vapi_catch_up_seconds=0.3) as stack:
            await eventually(lambda: _all_known(stack.client, {seen, *missed}), 15, what="the missed calls imported")
            events = (await stack.client.get(f"/v1/calls/{missed[0]}/events")).json()["data"]
            imported = [event for event in events if event["type"] == "call.imported"]
            assert imported[0]["payload"]["caughtUp"] is True
            call = (await stack.client.get(f"/v1/calls/{missed[0]}")).json()
            assert (call["assistantId"], call["phoneNumberId"]) == ("asst-other", "pn-other")
            # And on the timer, while running: a call placed elsewhere now.
            (later,) = await _placed_elsewhere(simulator, 1)
            await eventually(lambda: _known(stack.client, later), 15, what="the timer's round imported it")
        listed = [e.data for e in sim.log.entries if e.kind == "rest" and e.data["path"] == "/call"]
        assert listed, "Vapi's calls were listed"


async def _known(client: httpx.AsyncClient, call_id: str) -> bool:
    return call_id in await _ids(client)


async def _all_known(client: httpx.AsyncClient, call_ids: set[str]) -> bool:
    return call_ids <= await _ids(client)


async def test_a_backlog_is_read_page_by_page(database_url: str, tmp_path: Path) -> None:
    sim = VapiSimulator(api_key=VAPI_KEY, pace=8, script=SCRIPT)
    async with SimulatorServer(sim) as simulator:
        placed = await _placed_elsewhere(simulator, 5)
        # A second apart but two of them created in one millisecond, across the boundary of pages of three.
        first = sim.calls[placed[0]].created_at
        for index, call_id in enumerate(placed):
            sim.calls[call_id].created_at = first + dt.timedelta(seconds=index)
        sim.calls[placed[2]].created_at = sim.calls[placed[1]].created_at
        db = Database(database_url)
        try:
            async with httpx.AsyncClient() as http:
                vapi = VapiClient(http, base_url=simulator.base_url, api_key=VAPI_KEY, public_key=None, timeout=5)
                catch_up = CatchUp(db, CallWriter(db, CallChanges()), vapi, interval=3600, page_size=3)
                assert await catch_up.run_once() == 5
                assert await catch_up.run_once() == 0, "nothing new since the last seen createdAt"
            last = await catch_up.last_seen()
        finally:
            await db.dispose()
    created = [dt.datetime.fromisoformat(sim.calls[c].to_vapi()["createdAt"].replace("Z", "+00:00")) for c in placed]
    assert last == max(created)
    pages = [
        e.data for e in sim.log.entries if e.kind == "rest" and e.data["path"] == "/call" and e.data["method"] == "GET"
    ]
    assert len(pages) == 3 + 1, "5 calls in pages of 3 (the shared millisecond read twice), then one more round"


async def test_a_backlog_longer_than_a_round_is_walked_on_by_the_next_round(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catchup, "MAX_PAGES", 1)
    sim = VapiSimulator(api_key=VAPI_KEY, pace=8, script=SCRIPT)
    async with SimulatorServer(sim) as simulator:
        placed = await _placed_elsewhere(simulator, 5)
        # A millisecond each (placed back to back, two could share one, and a shared millisecond is
        # read twice: that is the other test's case).
        first = sim.calls[placed[0]].created_at
        for index, call_id in enumerate(placed):
            sim.calls[call_id].created_at = first + dt.timedelta(seconds=index)
        db = Database(database_url)
        try:
            async with httpx.AsyncClient() as http:
                vapi = VapiClient(http, base_url=simulator.base_url, api_key=VAPI_KEY, public_key=None, timeout=5)
                catch_up = CatchUp(db, CallWriter(db, CallChanges()), vapi, interval=3600, page_size=2)
                # One page per round: the newest two, then on below them (not from the newest stored again);
                # each later page lists its upper bound's call again, so it brings one new call.
                assert [await catch_up.run_once() for _ in range(5)] == [2, 1, 1, 1, 0]
                async with db.read() as session:
                    stored = set((await session.scalars(select(Call.id))).all())
        finally:
            await db.dispose()
    assert stored == set(placed)


async def test_a_call_whose_webhooks_were_lost_is_found_though_a_newer_one_was_stored(database_url: str) -> None:
    """Call A's webhooks were lost; B, created just after, reached Switchboard as usual. Rounds must not
    start from the newest call stored (B), neither at start-up nor on the timer, or A is never found."""
    sim = VapiSimulator(api_key=VAPI_KEY, pace=8, script=SCRIPT)
    async with SimulatorServer(sim) as simulator:
        db = Database(database_url)
        try:
            async with httpx.AsyncClient() as http:
                vapi = VapiClient(http, base_url=simulator.base_url, api_key=VAPI_KEY, public_key=None, timeout=5)
                for round_ in ("start-up", "timer"):
                    catch_up = CatchUp(db, CallWriter(db, CallChanges()), vapi, interval=3600, page_size=3)
                    if round_ == "timer":
                        assert await catch_up.run_once() == 0, "a first round, before A and B"
                    [lost] = await _placed_elsewhere(simulator, 1)
                    await asyncio.sleep(0.01)  # B is created a few milliseconds after A
                    [stored] = await _placed_elsewhere(simulator, 1)
                    async with db.write() as session:  # what B's webhooks stored
                        created = sim.calls[stored].to_vapi()["createdAt"].replace("Z", "+00:00")
                        session.add(
                            Call(id=stored, status="queued", vapi_created_at=dt.datetime.fromisoformat(created))
                        )
                    assert await catch_up.run_once() == 1, round_
                    async with db.read() as session:
                        assert await session.get(Call, lost) is not None, round_
        finally:
            await db.dispose()


def _page(*calls: tuple[str, str]) -> list[dict[str, Any]]:
    return [{"id": call_id, "createdAt": f"2026-12-05T09:00:{at}Z"} for call_id, at in calls]


def test_the_next_page_includes_the_oldest_millisecond_of_a_full_one() -> None:
    since = dt.datetime(2026, 12, 5, tzinfo=dt.UTC)
    first = Window(since)
    second = first.after(_page(("b", "02.000"), ("a", "01.000")), 2)
    assert second == Window(since, dt.datetime(2026, 12, 5, 9, 0, 1, tzinfo=dt.UTC), frozenset({"a"}))
    assert first.after(_page(("b", "02.000"), ("a", "01.000")), 3) is None  # not full: the last page
    assert first.after([{"id": "x"}, {"id": "y"}], 2) is None  # no readable createdAt
    # The same millisecond again, with a call not listed yet: stay on it, remembering both.
    assert second is not None
    third = second.after(_page(("a", "01.000"), ("c", "01.000")), 2)
    assert third == Window(since, second.before, frozenset({"a", "c"}))
    # A full page of that millisecond, every call listed already: step past it.
    assert third is not None
    fourth = third.after(_page(("c", "01.000"), ("a", "01.000")), 2)
    assert fourth == Window(since, dt.datetime(2026, 12, 5, 9, 0, 0, 999000, tzinfo=dt.UTC))
