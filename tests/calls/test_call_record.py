"""The complete call record (contract section 10): what the simulator's end-of-call report says is on
``GET /v1/calls/{id}``, and the ``endedReason``, ``phoneNumberId`` and ``type`` filters find it."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from service.calls.report import merge_report
from service.calls.service import CallFilters
from service.db.models import Call
from service.simulator import CallScript
from service.simulator.calls import STRUCTURED_OUTPUT_ID
from tests.harness import Stack, eventually, running_stack

SCRIPT = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=30.0, turns=())


async def _reported(stack: Stack, call_id: str) -> dict[str, Any]:
    """The call once Switchboard stored its end-of-call report."""

    async def fetched() -> dict[str, Any] | None:
        call: dict[str, Any] = (await stack.client.get(f"/v1/calls/{call_id}")).json()
        return call if call["costs"] else None

    return await eventually(fetched, 20, interval=0.05, what=f"the report of {call_id} is stored")


async def _ids(stack: Stack, path: str, **params: str) -> list[str]:
    response = await stack.client.get(path, params=params)
    assert response.status_code == 200, response.text
    return [item["callId" if path == "/v1/recordings" else "id"] for item in response.json()["data"]]


async def test_the_call_record_carries_the_report_and_the_filters_find_it(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=4) as stack:
        ended_by_us = await stack.place_call()
        other = await stack.place_call(phoneNumberId="pn-other")
        for call_id in (ended_by_us, other):
            await stack.sim.wait_for_status(call_id, "in-progress", timeout=20)
        await asyncio.sleep(1)  # a few seconds of call at this pace: a cost above zero
        stack.sim.end_call(ended_by_us)  # the simulator's end-call reason
        stack.sim.end_call(other, reason="customer-ended-call")
        call = await _reported(stack, ended_by_us)
        await _reported(stack, other)
        report = (await stack.sim.wait_for_webhook(ended_by_us, "end-of-call-report"))["body"]["message"]
        sim_call = stack.sim.calls[ended_by_us].to_vapi()

        assert call["cost"] == report["cost"]
        assert call["cost"] > 0
        assert call["costs"] == report["costs"]
        assert call["analysis"] == report["analysis"]
        assert call["summary"] == report["analysis"]["summary"]
        assert call["structuredOutputs"] == report["artifact"]["structuredOutputs"]
        assert STRUCTURED_OUTPUT_ID in call["structuredOutputs"]
        assert call["endedReason"] == report["endedReason"]
        assert call["phoneCallProvider"] == "twilio"
        assert call["phoneCallProviderId"] == sim_call["phoneCallProviderId"]
        assert call["type"] == "outboundPhoneCall"
        assert call["squadId"] is None
        assert call["workflowId"] is None

        for path in ("/v1/calls", "/v1/recordings"):
            await stack.wait_for_recording(other)
            await stack.wait_for_recording(ended_by_us)
            assert await _ids(stack, path, endedReason=report["endedReason"]) == [ended_by_us]
            assert await _ids(stack, path, endedReason="customer-ended-call") == [other]
            assert await _ids(stack, path, endedReason="silence-timed-out") == []
            assert await _ids(stack, path, phoneNumberId="pn-other") == [other]
            assert await _ids(stack, path, type="outboundPhoneCall") == [other, ended_by_us]
            assert await _ids(stack, path, type="inboundPhoneCall") == []
        refused = await stack.client.get("/v1/calls", params={"type": "carrierPigeon"})
        assert refused.status_code == 400
        assert refused.headers["content-type"].startswith("application/problem+json")


def _call() -> Call:
    call = Call(id="c1", status="ended")
    call.reported_at = call.cost = call.costs = call.analysis = call.structured_outputs = None
    for attribute in ("ended_message", "phone_call_provider", "phone_call_provider_id", "squad_id", "workflow_id"):
        setattr(call, attribute, None)
    return call


def test_the_later_source_wins_and_an_undated_one_only_fills_gaps() -> None:
    at = dt.datetime(2026, 12, 5, 9, tzinfo=dt.UTC)
    call = _call()
    report = {"cost": 0.5, "costs": [{"type": "vapi", "cost": 0.5}], "summary": "Talked.", "squadId": "sq-1"}
    assert merge_report(call, report, written_at=at)
    assert (call.cost, call.analysis, call.squad_id, call.reported_at) == (0.5, {"summary": "Talked."}, "sq-1", at)

    older_call_object = {"cost": 0.4, "analysis": {"summary": "Earlier."}, "endedMessage": "Bye"}
    assert not merge_report(call, older_call_object, written_at=at - dt.timedelta(seconds=1))
    assert (call.cost, call.analysis) == (0.5, {"summary": "Talked."})
    assert call.ended_message == "Bye"  # identity is taken from any source

    revised = {"cost": 0.55, "artifact": {"structuredOutputs": {"x": {"name": "n", "result": 1}}}}
    assert merge_report(call, revised, written_at=at + dt.timedelta(minutes=5))
    assert call.cost == 0.55
    assert call.structured_outputs == {"x": {"name": "n", "result": 1}}
    assert call.analysis == {"summary": "Talked."}  # what the later source leaves out is kept

    undated = {"cost": 9.0, "analysis": {"summary": "?"}}
    assert not merge_report(call, undated, written_at=None)
    assert call.cost == 0.55

    # An older source still fills a figure the later one left out.
    call.costs = None
    assert merge_report(call, {"costs": [{"type": "vapi", "cost": 0.55}]}, written_at=at)
    assert _costs(call) == [{"type": "vapi", "cost": 0.55}]
    assert call.reported_at == at + dt.timedelta(minutes=5)


def _costs(call: Call) -> Any:
    return call.costs


def test_an_undated_source_fills_what_is_missing() -> None:
    call = _call()
    assert merge_report(call, {"cost": 0.1, "phoneCallProvider": "vonage"}, written_at=None)
    assert (call.cost, call.phone_call_provider, call.reported_at) == (0.1, "vonage", None)


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        (CallFilters(ended_reason="customer-ended-call"), "ix_call_ended_reason_created_at"),
        (CallFilters(phone_number_id="pn-1"), "ix_call_phone_number_id_created_at"),
        (CallFilters(type="inboundPhoneCall"), "ix_call_type_created_at"),
    ],
)
async def test_each_new_filter_pages_through_its_index(database_url: str, filters: CallFilters, index: str) -> None:
    """A page of a filter is a range of the filter's index, already newest first (no sort of all matches)."""
    engine = create_async_engine(database_url)
    try:
        statement = filters.page(limit=50, cursor=None)
        sql = str(statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
        async with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                await connection.execute(text("SET enable_seqscan = off"))  # empty tables: as if they were big
                plan = [str(row[0]) for row in await connection.execute(text(f"EXPLAIN {sql}"))]
            else:
                plan = [str(row[-1]) for row in await connection.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]
    finally:
        await engine.dispose()
    assert any(index in step for step in plan), plan
    assert not any("SORT" in step.upper() and "TEMP B-TREE" in step.upper() for step in plan), plan
    assert not any(step.strip().startswith("Sort") for step in plan), plan
