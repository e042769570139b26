"""Vapi's own recording, kept (contract section 10): after the end-of-call report Switchboard downloads
the stereo recording into its storage, byte for byte, with retries that survive a restart, serves it at
``GET /v1/calls/{id}/recording/vapi`` and erases it with the call."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from service.recordings.audio import Piece, wav_header
from service.recordings.fill import Placed, find_alignment, parse_wav_header, stitched_pieces
from service.recordings.storage import build_storage
from service.recordings.vapi_copy import DownloadError, VapiCopyWorker, copy_key, retry_delay, stereo_url
from service.simulator import CallScript, SimulatorServer, VapiSimulator
from service.simulator.audio import FRAME_BYTES
from service.vapi.client import VapiClient
from tests.conftest import VAPI_KEY
from tests.harness import SHORT_SCRIPT, Stack, eventually, running_stack, running_switchboard

SHORT_TURNS = SHORT_SCRIPT.turns

SCRIPT = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=2.0, turns=())


async def _copy(stack: Stack, call_id: str, status: str = "stored", timeout: float = 20) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        copy = (await stack.client.get(f"/v1/calls/{call_id}/recording")).json()["vapiCopy"]
        return copy if copy is not None and copy["status"] == status else None

    return await eventually(reached, timeout, interval=0.05, what=f"the Vapi copy of {call_id} is {status}")


async def test_the_copy_equals_vapi_s_bytes_and_is_erased_with_the_call(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=4) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "ended", timeout=20)
        copy = await _copy(stack, call_id)
        original = stack.sim.calls[call_id].stereo_wav()
        assert len(original) > 44 + 16000, "more than half a second of stereo audio"

        response = await stack.client.get(f"/v1/calls/{call_id}/recording/vapi")
        assert response.status_code == 200
        assert response.content == original
        assert response.headers["content-type"].startswith("audio/wav")
        assert (copy["bytes"], copy["sha256"]) == (len(original), hashlib.sha256(original).hexdigest())
        ranged = await stack.client.get(f"/v1/calls/{call_id}/recording/vapi", headers={"Range": "bytes=0-43"})
        assert (ranged.status_code, ranged.content) == (206, original[:44])
        stored = tmp_path / "recordings" / copy_key(call_id)
        assert stored.read_bytes() == original

        await stack.sim.wait_idle(call_id)
        await stack.wait_for_recording(call_id)
        assert (await stack.client.delete(f"/v1/calls/{call_id}")).status_code == 204
        assert not stored.exists(), "the copy is erased with the call's storage prefix"
        assert (await stack.client.get(f"/v1/calls/{call_id}/recording/vapi")).status_code == 404


async def test_no_copy_is_made_when_turned_off(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=4, vapi_recording_copy=False) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "ended", timeout=20)
        await stack.wait_for_recording(call_id)
        events = [event["type"] for event in await stack.events(call_id)]
        assert "end-of-call-report" in events, "the report was stored"
        assert (await stack.client.get(f"/v1/calls/{call_id}/recording")).json()["vapiCopy"] is None
        assert not (tmp_path / "recordings" / copy_key(call_id)).exists()


async def test_an_expired_url_falls_back_to_vapi_and_a_failed_download_survives_a_restart(
    database_url: str, tmp_path: Path
) -> None:
    sim = VapiSimulator(api_key=VAPI_KEY, pace=4, script=SCRIPT)
    async with SimulatorServer(sim) as simulator:
        async with running_switchboard(database_url, tmp_path, simulator, vapi_recording_retry_seconds=0.2) as stack:
            call_id = await stack.place_call()
            await sim.wait_for_status(call_id, "in-progress", timeout=20)
            sim.expire_recording_url(call_id)
            sim.set_rest_fault(status=503)  # Vapi's own endpoint is down too: the download fails, for now
            await sim.wait_for_status(call_id, "ended", timeout=20)

            async def failed_once() -> dict[str, Any] | None:
                copy = (await stack.client.get(f"/v1/calls/{call_id}/recording")).json()["vapiCopy"]
                return copy if copy is not None and copy["attempts"] >= 1 and copy["error"] else None

            pending = await eventually(failed_once, 20, what="a download attempt failed")
            assert pending["status"] == "pending"
            assert "503" in pending["error"]
            missing = await stack.client.get(f"/v1/calls/{call_id}/recording/vapi")
            assert missing.status_code == 404
            assert missing.headers["content-type"].startswith("application/problem+json")
        # Switchboard was down; Vapi is back. The pending download is picked up at start-up.
        sim.clear_faults()
        async with running_switchboard(database_url, tmp_path, simulator, vapi_recording_retry_seconds=0.2) as stack:
            copy = await _copy(stack, call_id)
            response = await stack.client.get(f"/v1/calls/{call_id}/recording/vapi")
            assert response.content == sim.calls[call_id].stereo_wav()
            assert copy["attempts"] >= 2
        paths = [entry.data["path"] for entry in sim.log.entries if entry.kind == "rest"]
        assert f"/call/{call_id}/stereo-recording" in paths, "Vapi's endpoint once the URL had expired"
        served = [e.data for e in sim.log.entries if e.kind == "rest" and e.data["path"].startswith("/recordings/")]
        assert [entry["status"] for entry in served] == [200], "served once, through the signed redirect"


def test_backoff_and_the_report_s_url() -> None:
    assert [retry_delay(n, first=5) for n in (1, 2, 3)] == [5, 10, 20]
    assert retry_delay(30) == 3600
    assert stereo_url({"artifact": {"stereoRecordingUrl": "https://storage.vapi.ai/x-stereo.wav"}}) is not None
    assert stereo_url({"artifact": {"stereoRecordingUrl": "file:///etc/passwd"}}) is None
    assert stereo_url({"artifact": None}) is None


async def test_gaps_are_filled_from_vapi_s_copy_in_alignment(database_url: str, tmp_path: Path) -> None:
    script = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=6.0, turns=SHORT_TURNS)
    async with running_stack(database_url, tmp_path, script=script, pace=2) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "in-progress", timeout=20)
        await eventually(lambda: stack.sim.audio_sent(call_id), 10)
        stack.sim.drop_listen(call_id, after_frames=20)  # the socket drops: the frames until it is back are lost
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        recording = await stack.wait_for_recording(call_id)
        assert recording["gaps"], "the live recording has a gap"
        await _copy(stack, call_id)

        plain = (await stack.client.get(f"/v1/calls/{call_id}/recording.wav")).content
        response = await stack.client.get(f"/v1/calls/{call_id}/recording.wav", params={"fill": "vapi"})
        assert response.status_code == 200, response.text
        filled = response.content
        vapi = stack.sim.calls[call_id].stereo_wav()[44:]
        start = vapi.find(plain[44 : 44 + 5120])  # where the live recording starts in Vapi's audio
        assert start >= 0
        assert start % FRAME_BYTES == 0
        assert filled[44:] == vapi[start : start + len(filled) - 44], "every byte in its place"
        assert b"".join(stack.sim.audio_sent_per_connection(call_id)) != filled[44:], "the gap is filled"
        assert len(filled) - 44 >= sum(len(part) for part in stack.sim.audio_sent_per_connection(call_id))
        # From the first frame the live socket got to the last, none missing (the frames lost while the
        # socket was down come from Vapi's copy, where the clock-estimated gap had only silence).
        records = stack.sim.listen_records(call_id)
        first, last = records[0], records[-1]
        assert first.first_frame_index is not None
        assert last.first_frame_index is not None
        frames = last.first_frame_index + last.audio_frames - first.first_frame_index
        assert len(filled) - 44 == frames * FRAME_BYTES
        assert start == first.first_frame_index * FRAME_BYTES

        one_channel = await stack.client.get(
            f"/v1/calls/{call_id}/recording.wav", params={"fill": "vapi", "channel": "customer"}
        )
        assert one_channel.status_code == 409


def test_the_segments_are_stitched_on_vapi_s_timeline() -> None:
    segments = [Placed("seg1", 60, 300), Placed("seg0", 100, 20)]
    assert stitched_pieces(segments, key="v", data_offset=44) == [
        Piece(100, "seg0"),
        Piece(180, "v", 44 + 120),  # Vapi's audio between the two segments
        Piece(60, "seg1"),
    ]
    overlapping = [Placed("seg0", 100, 0), Placed("seg1", 60, 80)]  # seg1 repeats 20 bytes of seg0
    assert stitched_pieces(overlapping, key="v", data_offset=44) == [Piece(100, "seg0"), Piece(40, "seg1", 20)]
    header = wav_header(1000, sample_rate=16000, channels=2)
    fmt = parse_wav_header(header, total=1044)
    assert fmt is not None
    assert (fmt.sample_rate, fmt.channels, fmt.bits, fmt.data_offset, fmt.data_bytes) == (16000, 2, 16, 44, 1000)
    assert parse_wav_header(b"OggS" + bytes(40), total=44) is None
    window = bytes(range(1, 9)) * 640
    audio = bytes(400) + window + bytes(400)
    assert find_alignment(audio, (0, window), probe_at=100, block=4) == 300
    assert find_alignment(audio + window, (0, window), probe_at=0, block=4) is None, "found twice: ambiguous"


async def test_a_download_that_trickles_is_cut_at_the_timeout() -> None:
    """httpx's timeout bounds each read: a server sending a few bytes just inside it would hold a
    download (and its claim) far past the lease, and another claim would download it alongside."""

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: audio/wav\r\ncontent-length: 4000\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            for _ in range(1000):
                writer.write(b"RIFF")
                await writer.drain()
                await asyncio.sleep(0.2)

    server = await asyncio.start_server(trickle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    storage = build_storage("memory://")
    async with httpx.AsyncClient() as http:
        vapi = VapiClient(http, base_url="http://vapi.test", api_key=VAPI_KEY, public_key=None, timeout=5)
        worker = VapiCopyWorker(cast(Any, None), storage, http, vapi, allow_private=True, timeout=0.5)
        started = time.monotonic()
        with pytest.raises(DownloadError, match=r"did not finish within 0.5 s") as raised:
            await worker._fetch(f"http://127.0.0.1:{port}/recording.wav", {}, copy_key("c1"))
        assert time.monotonic() - started < 1.5
        assert not raised.value.expired, "retried later, not sent to Vapi's endpoint instead"
    server.close()
    await storage.close()
