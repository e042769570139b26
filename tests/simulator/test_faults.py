"""Fault injection through the Python API and the /_sim admin endpoints."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import httpx
import pytest
import websockets

from service.simulator import SimulatorServer, read_stamp
from tests.simulator.conftest import LONG_SCRIPT, capture_listen, place_call


async def _live_call(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> dict[str, Any]:
    simulator.sim.script = LONG_SCRIPT
    call = await place_call(vapi)
    await simulator.sim.wait_for_status(call["id"], "in-progress")
    return call


async def _connected(simulator: SimulatorServer, call_id: str, count: int = 1) -> None:
    sim = simulator.sim
    await sim.wait_until(lambda: len(sim.calls[call_id].connections) >= count or None)


async def test_drop_aborts_without_a_close_frame(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    sim = simulator.sim
    call = await _live_call(simulator, vapi)
    listening = asyncio.create_task(capture_listen(call["monitor"]["listenUrl"]))
    await _connected(simulator, call["id"])
    assert sim.drop_listen(call["id"], after_frames=10) == 1
    captured = await listening
    assert not captured.clean  # transport closed, no close frame: ConnectionClosedError client-side
    assert len(captured.frames) == sim.listen_records(call["id"])[0].audio_frames
    assert sim.listen_records(call["id"])[0].close == "abort"
    # The call goes on: a reconnect picks up the live timeline further on.
    again = asyncio.create_task(capture_listen(call["monitor"]["listenUrl"]))
    await _connected(simulator, call["id"])
    await sim.wait_until(lambda: sim.listen_records(call["id"])[1].audio_frames >= 5 or None)
    sim.end_call(call["id"])
    resumed = await again
    assert read_stamp(resumed.frames[0])[0] >= read_stamp(captured.frames[-1])[0] + 1
    assert sim.audio_sent_per_connection(call["id"]) == [captured.audio, resumed.audio]
    assert resumed.close_code == 1000


async def test_drop_with_close_code_1011(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    call = await _live_call(simulator, vapi)
    listening = asyncio.create_task(capture_listen(call["monitor"]["listenUrl"]))
    await _connected(simulator, call["id"])
    simulator.sim.drop_listen(call["id"], close_code=1011)
    captured = await listening
    assert captured.clean
    assert captured.close_code == 1011
    simulator.sim.end_call(call["id"])


async def test_refuse_listen_by_count_then_accept(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    call = await _live_call(simulator, vapi)
    simulator.sim.refuse_listen(call["id"], count=2, status=503)
    for _ in range(2):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await capture_listen(call["monitor"]["listenUrl"])
        assert refused.value.response.status_code == 503
    listening = asyncio.create_task(capture_listen(call["monitor"]["listenUrl"]))
    await _connected(simulator, call["id"])
    simulator.sim.end_call(call["id"])
    assert (await listening).close_code == 1000


async def test_refuse_listen_for_a_while(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    call = await _live_call(simulator, vapi)
    simulator.sim.refuse_listen(None, seconds=0.3)
    with pytest.raises(websockets.InvalidStatus):
        await capture_listen(call["monitor"]["listenUrl"])
    await asyncio.sleep(0.35)
    listening = asyncio.create_task(capture_listen(call["monitor"]["listenUrl"]))
    sim = simulator.sim
    await sim.wait_until(lambda: sim.listen_records(call["id"]) and sim.listen_records(call["id"])[0].audio_frames > 0)
    sim.end_call(call["id"])
    assert (await listening).frames


async def test_stall_sends_nothing_then_skips_ahead(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    sim = simulator.sim
    call = await _live_call(simulator, vapi)
    arrivals: list[float] = []
    listening = asyncio.create_task(
        capture_listen(call["monitor"]["listenUrl"], on_frame=lambda _: arrivals.append(time.monotonic()))
    )
    await sim.wait_until(lambda: sim.listen_records(call["id"]) and sim.listen_records(call["id"])[0].audio_frames > 5)
    sim.stall_listen(call["id"], 0.3)
    await asyncio.sleep(0.45)
    sim.end_call(call["id"])
    captured = await listening
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert max(gaps) >= 0.25
    stamps = [read_stamp(frame)[0] for frame in captured.frames]
    jumps = [b - a for a, b in itertools.pairwise(stamps)]
    assert max(jumps) > 100  # ~0.3 s at 1 ms per frame (pace 20) skipped


async def test_slow_and_failing_control(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    sim = simulator.sim
    call = await _live_call(simulator, vapi)
    url = call["monitor"]["controlUrl"]
    sim.set_control_fault(call["id"], status=500, count=1)
    failed = await vapi.post(url, json={"type": "say", "content": "Lost words."})
    assert failed.status_code == 500
    sim.set_control_fault(call["id"], delay=0.3, count=1)
    with pytest.raises(httpx.ReadTimeout):
        await vapi.post(url, json={"type": "say", "content": "Slow words."}, timeout=0.1)
    await sim.wait_until(lambda: any(m["message"] == "Slow words." for m in sim.calls[call["id"]].messages) or None)
    spoken = [m["message"] for m in sim.calls[call["id"]].messages]
    assert "Lost words." not in spoken  # refused requests are not acted on
    received = [m["content"] for m in sim.control_received(call["id"])]
    assert received == ["Lost words.", "Slow words."]  # both arrived
    sim.end_call(call["id"])


async def test_admin_endpoints(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    sim = simulator.sim
    call = await _live_call(simulator, vapi)
    listening = asyncio.create_task(capture_listen(call["monitor"]["listenUrl"]))
    await _connected(simulator, call["id"])
    drop = await vapi.post(f"/_sim/calls/{call['id']}/drop-listen", json={"afterFrames": 3, "closeCode": 1011})
    assert drop.json() == {"connections": 1}
    assert (await listening).close_code == 1011
    assert (await vapi.post("/_sim/calls/*/refuse-listen", json={"count": 1})).status_code == 200
    with pytest.raises(websockets.InvalidStatus):
        await capture_listen(call["monitor"]["listenUrl"])
    assert (await vapi.post("/_sim/faults/control", json={"status": 503, "count": 1})).status_code == 200
    assert (await vapi.post(call["monitor"]["controlUrl"], json={"type": "end-call"})).status_code == 503
    assert (await vapi.post("/_sim/faults/webhooks", json={"types": ["hang"]})).status_code == 200
    assert (await vapi.post("/_sim/faults/rest", json={"status": 502, "count": 1})).status_code == 200
    assert (await vapi.get(f"/call/{call['id']}")).status_code == 502
    assert (await vapi.post(f"/_sim/calls/{call['id']}/drop-listen", json={"bogus": 1})).status_code == 400
    assert (await vapi.delete("/_sim/faults")).status_code == 204
    assert (await vapi.post(f"/_sim/calls/{call['id']}/end", json={"endedReason": "silence-timed-out"})).json()
    await sim.wait_for_status(call["id"], "ended")
    assert sim.calls[call["id"]].ended_reason == "silence-timed-out"
    # The end's webhooks are delivered after the status changes: let them land before the log is cleared.
    await sim.wait_until(lambda: sim.webhooks_sent(call["id"], "end-of-call-report") or None)

    log = (await vapi.get("/_sim/log", params={"callId": call["id"]})).json()
    kinds = {entry["kind"] for entry in log["entries"]}
    assert {"rest", "control", "listen", "call", "fault"} <= kinds
    assert log["listen"][0]["closeCode"] == 1011
    assert len(log["listen"][0]["sha256"]) == 64
    calls = (await vapi.get("/_sim/calls")).json()
    assert calls[0]["status"] == "ended"
    script = await vapi.put("/_sim/script", json={"talkSeconds": 2.5, "turns": []})
    assert script.json()["talk_seconds"] == 2.5
    assert sim.script.turns == ()
    assert (await vapi.delete("/_sim/log")).status_code == 204
    assert sim.log.entries == []
