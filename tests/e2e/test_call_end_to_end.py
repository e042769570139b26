"""A call placed through Switchboard, end to end: real uvicorn, the Vapi simulator on loopback, a real
database (SQLite file and PostgreSQL), real files for the recording."""

from __future__ import annotations

import io
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from vapi.types.client_inbound_message_say import ClientInboundMessageSay

from service.app import create_app
from service.recordings.audio import extract_channel
from service.simulator import CallScript, SimulatorServer, Utterance, VapiSimulator
from tests.conftest import ADMIN_KEY, VAPI_KEY, make_settings
from tests.servers import bind_loopback, serve, url_of

CALL = {
    "assistantId": "asst-e2e",
    "phoneNumberId": "pn-e2e",
    "customer": {"number": "+14155550123", "name": "Ada"},
    "metadata": {"crmId": "crm-7"},
}
SCRIPT = CallScript(
    ring_after=0.5,
    answer_after=0.5,
    talk_seconds=8.0,
    turns=(
        Utterance("assistant", "Hello, how can I help?", at=0.2),
        Utterance("user", "I want to cancel my plan.", at=2.0),
    ),
)


@dataclass
class Stack:
    client: httpx.AsyncClient
    sim: VapiSimulator


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    sim = VapiSimulator(api_key=VAPI_KEY, pace=8, script=SCRIPT)
    async with SimulatorServer(sim) as simulator:
        sock = bind_loopback()
        settings = make_settings(
            database_url,
            storage_url=f"file://{tmp_path / 'recordings'}",
            vapi_base_url=simulator.base_url,
            public_url=url_of(sock),
        )
        async with (
            serve(create_app(settings), sock) as base_url,
            httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client,
        ):
            yield Stack(client, sim)


async def wait_for_recording(client: httpx.AsyncClient, call_id: str) -> dict[str, Any]:
    async def finished() -> dict[str, Any] | None:
        response = await client.get(f"/v1/calls/{call_id}/recording")
        body: dict[str, Any] = response.json()
        return body if response.status_code == 200 and body["status"] in ("completed", "partial", "failed") else None

    import asyncio

    async with asyncio.timeout(20):
        while (recording := await finished()) is None:
            await asyncio.sleep(0.05)
    return recording


async def test_a_call_is_placed_recorded_and_downloadable(stack: Stack) -> None:
    client, sim = stack.client, stack.sim
    created = await client.post("/v1/calls", json=CALL)
    assert created.status_code == 201, created.text
    call_id = created.json()["id"]
    assert created.json()["monitor"]["listen"] is True

    await sim.wait_for_status(call_id, "in-progress")
    said = await client.post(f"/v1/calls/{call_id}/say", json={"content": "This call is recorded."})
    assert said.status_code == 202, said.text
    assert said.json()["status"] == "sent"
    control = sim.control_received(call_id)
    assert [message["content"] for message in control] == ["This call is recorded."]
    ClientInboundMessageSay.model_validate(control[0])

    await sim.wait_for_status(call_id, "ended")
    recording = await wait_for_recording(client, call_id)
    sent = sim.audio_sent(call_id)
    assert len(sent) > 0
    assert recording["status"] == "completed"
    assert recording["bytes"] == len(sent)
    assert (recording["sampleRate"], recording["channels"], recording["encoding"]) == (16000, 2, "pcm_s16le")
    assert recording["gaps"] == []
    import hashlib

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
    assert call["recording"] == {"status": "completed", "durationSeconds": recording["durationSeconds"], "bytes": len(sent)}

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
