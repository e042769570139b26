"""A call placed through Switchboard, end to end: real uvicorn, the Vapi simulator on loopback, a real
database (SQLite file and PostgreSQL), real files for the recording."""

from __future__ import annotations

import hashlib
import io
import wave
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from vapi.types.client_inbound_message_say import ClientInboundMessageSay

from service.logging import configure_logging
from service.recordings.audio import extract_channel
from tests.conftest import ADMIN_KEY, VAPI_KEY, WEBHOOK_SECRET
from tests.harness import CALL, Stack, running_stack


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(database_url, tmp_path) as running:
        yield running


async def test_a_call_is_placed_recorded_and_downloadable(stack: Stack) -> None:
    client, sim = stack.client, stack.sim
    created = await client.post("/v1/calls", json=CALL)
    assert created.status_code == 201, created.text
    call_id = created.json()["id"]
    assert created.json()["monitor"]["listen"] is True
    assert created.json()["monitor"]["listenUrl"].endswith("/listen"), "admin keys see monitor URLs"

    await sim.wait_for_status(call_id, "in-progress")
    said = await client.post(f"/v1/calls/{call_id}/say", json={"content": "This call is recorded."})
    assert said.status_code == 202, said.text
    assert said.json()["status"] == "sent"
    control = sim.control_received(call_id)
    assert [message["content"] for message in control] == ["This call is recorded."]
    ClientInboundMessageSay.model_validate(control[0])

    await sim.wait_for_status(call_id, "ended")
    recording = await stack.wait_for_recording(call_id)
    sent = sim.audio_sent(call_id)
    assert len(sent) > 0
    assert recording["status"] == "completed"
    assert recording["bytes"] == len(sent)
    assert (recording["sampleRate"], recording["channels"], recording["encoding"]) == (16000, 2, "pcm_s16le")
    assert recording["gaps"] == []
    assert recording["sha256"] == hashlib.sha256(sent).hexdigest()

    pcm = await client.get(f"/v1/calls/{call_id}/recording.pcm")
    assert pcm.status_code == 200, pcm.text
    assert pcm.content == sent, "the stored PCM is byte for byte what the simulator sent"

    wav = await client.get(f"/v1/calls/{call_id}/recording.wav")
    assert wav.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(wav.content)) as parsed:
        assert (parsed.getnchannels(), parsed.getframerate(), parsed.getsampwidth()) == (2, 16000, 2)
        assert parsed.readframes(parsed.getnframes()) == sent

    assistant = await client.get(f"/v1/calls/{call_id}/recording.wav", params={"channel": "assistant"})
    with wave.open(io.BytesIO(assistant.content)) as parsed:
        assert parsed.getnchannels() == 1
        assert parsed.readframes(parsed.getnframes()) == extract_channel(sent, 1, 2)

    ranged = await client.get(f"/v1/calls/{call_id}/recording.pcm", headers={"Range": "bytes=1000-2279"})
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == f"bytes 1000-2279/{len(sent)}"
    assert ranged.content == sent[1000:2280]

    call = (await client.get(f"/v1/calls/{call_id}")).json()
    assert call["status"] == "ended"
    assert call["endedReason"] == "customer-ended-call"
    assert call["metadata"] == {"crmId": "crm-7"}
    assert call["recording"] == {
        "status": "completed",
        "durationSeconds": recording["durationSeconds"],
        "bytes": len(sent),
    }

    events = (await client.get(f"/v1/calls/{call_id}/events", params={"limit": 500})).json()["data"]
    seqs = [event["seq"] for event in events]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    types = [(event["source"], event["type"]) for event in events]
    statuses = [event["payload"]["status"] for event in events if event["type"] == "status-update"]
    assert statuses[-1] == "ended"
    assert "in-progress" in statuses
    transcripts = [event["payload"] for event in events if event["source"] == "vapi" and event["type"] == "transcript"]
    assert any(t["role"] == "user" and "cancel" in t["transcript"] for t in transcripts)
    assert all(t["transcriptType"] == "final" for t in transcripts), "only final transcripts are subscribed"
    assert ("switchboard", "injection.sent") in types
    assert ("switchboard", "listen.connected") in types
    assert ("switchboard", "recording.completed") in types
    assert ("vapi", "end-of-call-report") in types
    assert any(source == "listen" for source, _ in types), "listen-socket text frames are kept"

    metrics = (await client.get("/metrics")).text
    assert f"switchboard_listen_bytes_total {float(len(sent))}" in metrics
    assert f"switchboard_listen_frames_total {float(len(sent) // 1280)}" in metrics
    assert "switchboard_listen_sessions_active 0.0" in metrics
    assert 'switchboard_webhooks_total{type="end-of-call-report"} 1.0' in metrics


async def test_secrets_never_reach_the_logs(stack: Stack, capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("debug")  # the most verbose level
    try:
        call_id, call = await _call_with_failures(stack)
    finally:
        configure_logging("info")
    logs = "".join(capfd.readouterr())
    assert call_id in logs, "the logs do talk about the call"
    secrets = {
        "listen URL": call["monitor"]["listenUrl"],
        "control URL": call["monitor"]["controlUrl"],
        "admin key": ADMIN_KEY,
        "webhook secret": WEBHOOK_SECRET,
        "Vapi key": VAPI_KEY,
    }
    for name, secret in secrets.items():
        assert secret not in logs, f"the {name} leaked into the logs"


async def _call_with_failures(stack: Stack) -> tuple[str, dict[str, Any]]:
    """A call with a failed say and a dropped listen socket: the paths that log the most."""
    client, sim = stack.client, stack.sim
    call_id = await stack.place_call()
    call: dict[str, Any] = (await client.get(f"/v1/calls/{call_id}")).json()
    await sim.wait_for_status(call_id, "in-progress")
    sim.set_control_fault(call_id, status=500, count=1)
    failed = await client.post(f"/v1/calls/{call_id}/say", json={"content": "hello"})
    assert failed.json()["status"] == "failed"
    sim.drop_listen(call_id)
    await sim.wait_for_status(call_id, "ended", timeout=30)
    await stack.wait_for_recording(call_id)
    return call_id, call
