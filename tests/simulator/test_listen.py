"""The listen socket: paced stereo frames byte-identical to the log, text frames, late joiners, auth."""

from __future__ import annotations

import asyncio
import hashlib
import json
from array import array

import httpx
import pytest
import websockets

from service.simulator import (
    FRAME_BYTES,
    STAMP_BYTES,
    SimulatorServer,
    VapiSimulator,
    read_stamp,
    split_channels,
)
from service.simulator.script import CallScript
from tests.simulator.conftest import LONG_SCRIPT, SHORT_SCRIPT, capture_listen, place_call, stall, with_overrides

FRAMES_PER_SECOND = 50


def _peak(mono: bytes) -> int:
    return max(abs(v) for v in array("h", mono))


async def test_listener_gets_every_frame_of_the_call(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    call = await place_call(vapi)
    captured = await capture_listen(call["monitor"]["listenUrl"])
    sim = simulator.sim

    expected = int(SHORT_SCRIPT.talk_seconds * FRAMES_PER_SECOND)
    assert len(captured.frames) == expected
    assert all(len(frame) == FRAME_BYTES for frame in captured.frames)
    assert [read_stamp(frame)[0] for frame in captured.frames] == list(range(expected))
    assert captured.audio == sim.audio_sent(call["id"])
    assert sim.audio_sent_per_connection(call["id"]) == [captured.audio]
    assert captured.close_code == 1000
    assert captured.clean
    record = sim.listen_records(call["id"])[0]
    assert record.sha256 == hashlib.sha256(captured.audio).hexdigest()
    assert record.close == "normal"
    assert captured.texts == record.texts


async def test_frames_carry_the_speakers_on_their_channels(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    call = await place_call(vapi)
    captured = await capture_listen(call["monitor"]["listenUrl"])

    def channels(second: float) -> tuple[int, int]:
        customer, assistant = split_channels(captured.frames[int(second * FRAMES_PER_SECOND)][STAMP_BYTES:])
        return _peak(customer), _peak(assistant)

    # SHORT_SCRIPT: assistant 0.1-1.1 s, user 1.3-2.5 s and 2.8-3.2 s.
    assert channels(0.5)[0] == 0
    assert channels(0.5)[1] > 1000
    assert channels(1.8)[0] > 1000
    assert channels(1.8)[1] == 0
    assert channels(3.6) == (0, 0)


async def test_text_frames_carry_speech_updates_and_transcripts(
    simulator: SimulatorServer, vapi: httpx.AsyncClient
) -> None:
    call = await place_call(vapi)
    captured = await capture_listen(call["monitor"]["listenUrl"])
    events = [json.loads(text) for text in captured.texts]
    finals = [
        (e["role"], e["transcript"]) for e in events if e["type"] == "transcript" and e["transcriptType"] == "final"
    ]
    assert finals == [
        ("assistant", "Hello, how can I help?"),
        ("user", "I want to cancel my plan."),
        ("user", "Thank you."),
    ]
    speech = [(e["role"], e["status"], e["turn"]) for e in events if e["type"] == "speech-update"]
    assert speech[:2] == [("assistant", "started", 0), ("assistant", "stopped", 0)]
    assert any(e["type"] == "transcript" and e["transcriptType"] == "partial" for e in events)


async def test_late_joiner_gets_no_earlier_audio(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    sim = simulator.sim
    sim.script = LONG_SCRIPT
    call = await place_call(vapi)
    url = call["monitor"]["listenUrl"]
    first = asyncio.create_task(capture_listen(url))
    await sim.wait_until(
        lambda: sim.listen_records(call["id"]) and sim.listen_records(call["id"])[0].audio_frames >= 100
    )
    second = asyncio.create_task(capture_listen(url))
    await sim.wait_until(lambda: len(sim.listen_records(call["id"])) == 2 or None)
    await sim.wait_until(lambda: sim.listen_records(call["id"])[1].audio_frames >= 20 or None)
    sim.end_call(call["id"])
    early, late = await first, await second

    assert read_stamp(early.frames[0])[0] == 0
    late_start = read_stamp(late.frames[0])[0]
    assert late_start >= 100
    # Both saw the same timeline: the late joiner's frames are the tail of the early one's.
    assert early.frames[late_start : late_start + len(late.frames)] == late.frames
    assert sim.audio_sent_per_connection(call["id"]) == [early.audio, late.audio]
    assert sim.audio_sent(call["id"]) == early.audio + late.audio
    assert early.close_code == late.close_code == 1000


async def test_listen_before_answer_waits_for_audio(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    sim = simulator.sim
    sim.script = CallScript(ring_after=2.0, answer_after=2.0, talk_seconds=1.0, turns=())
    call = await place_call(vapi)
    captured = await capture_listen(call["monitor"]["listenUrl"])
    assert len(captured.frames) == 50
    assert sim.calls[call["id"]].status == "ended"


async def test_unanswered_call_closes_the_socket_without_audio(
    simulator: SimulatorServer, vapi: httpx.AsyncClient
) -> None:
    sim = simulator.sim
    sim.script = CallScript(ring_after=0.2, answer=False, no_answer_after=1.0)
    call = await place_call(vapi)
    captured = await capture_listen(call["monitor"]["listenUrl"])
    assert captured.frames == []
    assert captured.close_code == 1000
    ended = await sim.wait_for_status(call["id"], "ended")
    assert ended.ended_reason == "customer-did-not-answer"
    assert ended.started_at is None


async def test_unknown_and_ended_calls_refuse_the_handshake(
    simulator: SimulatorServer, vapi: httpx.AsyncClient
) -> None:
    with pytest.raises(websockets.InvalidStatus) as unknown:
        await capture_listen(f"{simulator.base_url.replace('http', 'ws')}/no-such-call/listen")
    assert unknown.value.response.status_code == 404
    call = await place_call(vapi)
    await simulator.sim.wait_for_status(call["id"], "ended")
    with pytest.raises(websockets.InvalidStatus) as ended:
        await capture_listen(call["monitor"]["listenUrl"])
    assert ended.value.response.status_code == 404
    refused = [e.data for e in simulator.sim.log.select(kind="listen") if e.data["event"] == "refused"]
    assert [r["status"] for r in refused] == [404, 404]


async def test_legacy_transport_path(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    call = await place_call(vapi)
    legacy = call["monitor"]["listenUrl"].removesuffix("/listen") + "/transport"
    captured = await capture_listen(legacy)
    assert len(captured.frames) == 200


async def test_listen_authentication(receiver: object) -> None:
    sim = VapiSimulator(public_key="pub-key", pace=20, script=SHORT_SCRIPT)
    async with SimulatorServer(sim) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        body = with_overrides(monitorPlan={"listenEnabled": True, "listenAuthenticationEnabled": True})
        call = await place_call(client, body)
        with pytest.raises(websockets.InvalidStatus) as refused:
            await capture_listen(call["monitor"]["listenUrl"])
        assert refused.value.response.status_code == 401
        captured = await capture_listen(call["monitor"]["listenUrl"], headers={"Authorization": "Bearer pub-key"})
        assert len(captured.frames) == 200


async def test_without_keep_audio_only_counts_and_hashes_are_kept(receiver: object) -> None:
    sim = VapiSimulator(pace=20, script=SHORT_SCRIPT, keep_audio=False)
    async with SimulatorServer(sim) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        call = await place_call(client)
        captured = await capture_listen(call["monitor"]["listenUrl"])
        record = sim.listen_records(call["id"])[0]
    assert record.audio == b""
    assert sim.audio_sent(call["id"]) == b""
    assert record.audio_frames == len(captured.frames) == 200
    assert record.audio_bytes == len(captured.audio)
    assert record.sha256 == hashlib.sha256(captured.audio).hexdigest()
    assert record.texts == captured.texts


async def test_a_late_event_loop_sends_no_audio_past_the_calls_end(
    simulator: SimulatorServer, vapi: httpx.AsyncClient
) -> None:
    call = await place_call(vapi)
    capture = asyncio.create_task(capture_listen(call["monitor"]["listenUrl"]))
    sim = simulator.sim
    await sim.wait_until(lambda: sim.calls[call["id"]].audio_t0)
    stall(0.5)  # the whole call's audio (0.2 s at this pace) is due meanwhile; the end handler runs late
    captured = await capture
    expected = int(SHORT_SCRIPT.talk_seconds * FRAMES_PER_SECOND)
    assert sim.calls[call["id"]].end_frame == expected
    assert [read_stamp(frame)[0] for frame in captured.frames] == list(range(expected))
