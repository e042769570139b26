"""The control URL: every control type, its effects on the call, auth and validation."""

from __future__ import annotations

import asyncio
import json
from array import array
from typing import Any

import httpx

from service.simulator import STAMP_BYTES, SimulatorServer, VapiSimulator, read_stamp, split_channels
from service.simulator.lifecycle import END_CALL_REASON, SAY_THEN_END_REASON, TRANSFER_REASON
from tests.simulator.conftest import (
    ALL_MESSAGES,
    LONG_SCRIPT,
    SHORT_SCRIPT,
    WebhookReceiver,
    capture_listen,
    place_call,
    stall,
    with_overrides,
)


async def _live_call(simulator: SimulatorServer, vapi: httpx.AsyncClient, **overrides: Any) -> dict[str, Any]:
    simulator.sim.script = LONG_SCRIPT
    call = await place_call(vapi, with_overrides(serverMessages=ALL_MESSAGES, **overrides))
    await simulator.sim.wait_for_status(call["id"], "in-progress")
    return call


async def test_say_speaks_as_the_assistant(
    simulator: SimulatorServer, vapi: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    sim = simulator.sim
    call = await _live_call(simulator, vapi)
    listening = asyncio.create_task(capture_listen(call["monitor"]["listenUrl"]))
    await sim.wait_until(lambda: sim.listen_records(call["id"]) or None)
    say = {"type": "say", "content": "Before you go, may I offer you a discount?", "endCallAfterSpoken": True}
    response = await vapi.post(call["monitor"]["controlUrl"], json=say)
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    captured = await listening
    ended = await sim.wait_idle(call["id"])

    assert sim.control_received(call["id"]) == [say]
    assert ended.ended_reason == SAY_THEN_END_REASON
    finals = [
        m["transcript"]
        for m in receiver.messages(call["id"], "transcript")
        if m["role"] == "assistant" and m["transcriptType"] == "final"
    ]
    assert finals[-1] == say["content"]
    texts = [json.loads(t) for t in captured.texts]
    assert {"type": "transcript", "transcriptType": "final", "role": "assistant", "transcript": say["content"]} in texts
    started = receiver.messages(call["id"], "assistant.speechStarted")
    assert started[-1]["source"] == "force-say"
    assert started[-1]["text"] == say["content"]
    # The say is audible: the assistant channel carries tone in the last frames before the end.
    _, assistant = split_channels(captured.frames[-2][STAMP_BYTES:])
    assert max(abs(v) for v in array("h", assistant)) > 1000
    assert receiver.messages(call["id"], "status-update")[-1]["endedReason"] == SAY_THEN_END_REASON


async def test_legacy_say_message_field_and_sdk_envelope(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    call = await _live_call(simulator, vapi)
    url = call["monitor"]["controlUrl"]
    assert (await vapi.post(url, json={"type": "say", "message": "Legacy text."})).status_code == 200
    assert (await vapi.post(url, json={"message": {"type": "say", "content": "Wrapped."}})).status_code == 200
    sim = simulator.sim
    await sim.wait_until(lambda: len([m for m in sim.calls[call["id"]].messages if m["role"] == "bot"]) >= 3 or None)
    spoken = [m["message"] for m in sim.calls[call["id"]].messages if m["role"] == "bot"]
    assert spoken[-2:] == ["Legacy text.", "Wrapped."]
    sim.end_call(call["id"])


async def test_end_call_ends_at_once(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    call = await _live_call(simulator, vapi)
    listening = asyncio.create_task(capture_listen(call["monitor"]["listenUrl"]))
    sim = simulator.sim
    await sim.wait_until(lambda: sim.listen_records(call["id"]) and sim.listen_records(call["id"])[0].audio_frames > 5)
    assert (await vapi.post(call["monitor"]["controlUrl"], json={"type": "end-call"})).status_code == 200
    captured = await listening
    ended = await simulator.sim.wait_for_status(call["id"], "ended")
    assert ended.ended_reason == END_CALL_REASON
    assert captured.close_code == 1000
    assert len(captured.frames) < LONG_SCRIPT.talk_seconds * 50
    stamps = [read_stamp(frame)[0] for frame in captured.frames]
    assert stamps == list(range(stamps[0], stamps[0] + len(stamps)))
    assert stamps[-1] + 1 == simulator.sim.calls[call["id"]].end_frame
    gone = await vapi.post(call["monitor"]["controlUrl"], json={"type": "end-call"})
    assert gone.status_code == 404


async def test_other_control_types(
    simulator: SimulatorServer, vapi: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    sim = simulator.sim
    call = await _live_call(simulator, vapi)
    url = call["monitor"]["controlUrl"]
    messages: list[dict[str, Any]] = [
        {
            "type": "add-message",
            "message": {"role": "system", "content": "Offer 20%."},
            "triggerResponseEnabled": False,
        },
        {"type": "control", "control": "mute-assistant"},
        {"type": "control", "control": "unmute-assistant"},
        {"type": "control", "control": "mute-customer"},
        {"type": "control", "control": "unmute-customer"},
        {"type": "append-context", "kind": "instructions", "content": "Be brief."},
        {
            "type": "send-transport-message",
            "message": {"transport": "twilio", "twiml": "<Response><Pause/></Response>"},
        },
        {"type": "transfer", "destination": {"type": "number", "number": "+15550001111"}, "content": "Transferring."},
    ]
    for message in messages:
        response = await vapi.post(url, json=message)
        assert response.status_code == 200, (message, response.text)
    ended = await sim.wait_idle(call["id"])
    assert sim.control_received(call["id"]) == messages
    assert ended.ended_reason == TRANSFER_REASON
    statuses = [m["status"] for m in receiver.messages(call["id"], "status-update")]
    assert statuses[-2:] == ["forwarding", "ended"]
    forwarding = receiver.messages(call["id"], "status-update")[-2]
    assert forwarding["destination"] == messages[-1]["destination"]
    assert receiver.messages(call["id"], "transfer-update")[0]["destination"]["number"] == "+15550001111"
    roles = [(m["role"], m["message"]) for m in ended.messages]
    assert ("system", "Offer 20%.") in roles
    assert ("system", "Be brief.") in roles
    assert ("bot", "Transferring.") in roles


async def test_invalid_control_is_400_and_logged(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    call = await _live_call(simulator, vapi)
    url = call["monitor"]["controlUrl"]
    unknown = await vapi.post(url, json={"type": "dance"})
    assert unknown.status_code == 400
    assert unknown.json()["statusCode"] == 400
    assert (await vapi.post(url, content=b"not json")).status_code == 400
    assert (await vapi.post(url, json={"type": "say"})).status_code == 400
    entries = simulator.sim.log.select(kind="control", call_id=call["id"])
    assert [e.data["status"] for e in entries] == [400, 400, 400]
    assert entries[1].data["message"] is None
    assert entries[1].data["raw"] == "not json"
    simulator.sim.end_call(call["id"])


async def test_control_authentication(receiver: WebhookReceiver) -> None:
    sim = VapiSimulator(public_key="pub-key", pace=20, script=LONG_SCRIPT)
    async with SimulatorServer(sim) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        body = with_overrides(monitorPlan={"controlEnabled": True, "controlAuthenticationEnabled": True})
        call = await place_call(client, body)
        url = call["monitor"]["controlUrl"]
        assert (await client.post(url, json={"type": "end-call"})).status_code == 401
        ok = await client.post(url, json={"type": "end-call"}, headers={"Authorization": "Bearer pub-key"})
        assert ok.status_code == 200
        assert (await sim.wait_for_status(call["id"], "ended")).ended_reason == END_CALL_REASON


async def test_say_before_answer_is_spoken_once_answered(receiver: WebhookReceiver) -> None:
    sim = VapiSimulator(pace=20, script=SHORT_SCRIPT)
    async with SimulatorServer(sim) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        call = await place_call(client)
        response = await client.post(call["monitor"]["controlUrl"], json={"type": "say", "content": "Early bird."})
        assert response.status_code == 200
        ended = await sim.wait_for_status(call["id"], "ended")
    assert "Early bird." in [m["message"] for m in ended.messages if m["role"] == "bot"]


async def test_a_say_that_ends_the_call_ends_its_audio_with_the_speech_even_when_late(
    simulator: SimulatorServer, vapi: httpx.AsyncClient
) -> None:
    sim = simulator.sim
    call = await _live_call(simulator, vapi)
    listening = asyncio.create_task(capture_listen(call["monitor"]["listenUrl"]))
    await sim.wait_until(lambda: sim.listen_records(call["id"]) or None)
    say = {"type": "say", "content": "Goodbye now.", "endCallAfterSpoken": True}
    assert (await vapi.post(call["monitor"]["controlUrl"], json=say)).status_code == 200
    stall(0.5)  # the speech's end is due meanwhile: the end handler runs late
    captured = await listening
    assert read_stamp(captured.frames[-1])[0] + 1 == sim.calls[call["id"]].end_frame
    _, assistant = split_channels(captured.frames[-1][STAMP_BYTES:])
    assert max(abs(v) for v in array("h", assistant)) > 1000, "the audio ends with the say, not with silence"
