"""Vapi's own recording, kept (contract section 10): after the end-of-call report Switchboard downloads
the stereo recording into its storage, byte for byte, with retries that survive a restart, serves it at
``GET /v1/calls/{id}/recording/vapi`` and erases it with the call."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from service.recordings.vapi_copy import copy_key, retry_delay, stereo_url
from service.simulator import CallScript, SimulatorServer, VapiSimulator
from tests.conftest import VAPI_KEY
from tests.harness import Stack, eventually, running_stack, running_switchboard

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
