"""Catching up: calls Vapi created while Switchboard was stopped (or without its webhooks) are listed
with ``GET /call?createdAtGt=<last seen createdAt>`` at start-up and on a timer, page by page, and
imported through the call writer."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import httpx

from service.calls.catchup import CatchUp, next_window
from service.calls.changes import CallChanges
from service.calls.writer import CallWriter
from service.db.engine import Database
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
            # Distinct createdAt milliseconds: paging by createdAtLt skips calls created in the same
            # millisecond as a page's oldest (a known limit of catch-up, see the session note).
            await asyncio.sleep(0.003)
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
        db = Database(database_url)
        async with httpx.AsyncClient() as http:
            vapi = VapiClient(http, base_url=simulator.base_url, api_key=VAPI_KEY, public_key=None, timeout=5)
            catch_up = CatchUp(db, CallWriter(db, CallChanges()), vapi, interval=3600, page_size=2)
            assert await catch_up.run_once() == 5
            assert await catch_up.run_once() == 0, "nothing new since the last seen createdAt"
            last = await catch_up.last_seen()
        await db.dispose()
    created = [dt.datetime.fromisoformat(sim.calls[c].to_vapi()["createdAt"].replace("Z", "+00:00")) for c in placed]
    assert last == max(created)
    pages = [e.data for e in sim.log.entries if e.kind == "rest" and e.data["path"] == "/call"]
    assert len(pages) >= 3 + 1, "5 calls in pages of 2, then the empty second round"


def test_the_next_page_starts_below_the_oldest_of_a_full_one() -> None:
    page: list[dict[str, Any]] = [
        {"id": "b", "createdAt": "2026-12-05T09:00:02.000Z"},
        {"id": "a", "createdAt": "2026-12-05T09:00:01.000Z"},
    ]
    assert next_window(page, 2) == dt.datetime(2026, 12, 5, 9, 0, 1, tzinfo=dt.UTC)
    assert next_window(page, 3) is None  # not full: the last page
    assert next_window([{"id": "x"}, {"id": "y"}], 2) is None
