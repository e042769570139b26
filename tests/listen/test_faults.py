"""Listen sessions under faults: refused and silent sockets, failing storage, restarts (in process)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from service.recordings.storage import LocalStorage, SegmentWriter
from service.simulator import CallScript, SimulatorServer, VapiSimulator
from tests.conftest import VAPI_KEY
from tests.harness import eventually, running_stack, running_switchboard

QUIET = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=10.0, turns=())


async def wait_for_audio(sim: VapiSimulator, call_id: str, at_least: int) -> None:
    await eventually(lambda: len(sim.audio_sent(call_id)) >= at_least, what=f"{at_least} bytes of audio were sent")


async def test_refused_connections_are_retried(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, script=QUIET, pace=5) as stack:
        stack.sim.refuse_listen(count=3, status=503)
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        recording = await stack.wait_for_recording(call_id)
        refused = [e for e in stack.sim.log.entries if e.kind == "listen" and e.data.get("event") == "refused"]
        assert len(refused) == 3
        assert await stack.pcm(call_id) == stack.sim.audio_sent(call_id)
        assert recording["status"] == "completed"


async def test_a_silent_socket_is_treated_as_dropped(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, script=QUIET, pace=2, listen_idle_timeout_seconds=1.0) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "in-progress")
        await wait_for_audio(stack.sim, call_id, 20_000)
        stack.sim.stall_listen(call_id, seconds=2.5)
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        recording = await stack.wait_for_recording(call_id)
        assert await stack.pcm(call_id) == b"".join(stack.sim.audio_sent_per_connection(call_id))
        assert len(stack.sim.audio_sent_per_connection(call_id)) >= 2, "the session reconnected"
        assert recording["status"] == "partial"
        assert recording["gaps"], "the silent interval is a gap"
        disconnects = [e["payload"] for e in await stack.events(call_id) if e["type"] == "listen.disconnected"]
        assert {"reason": "idle"} in disconnects


class BrokenWriter:
    async def write(self, data: bytes) -> None:
        raise OSError("disk on fire")

    async def close(self) -> None:
        return None


class BrokenStorage(LocalStorage):
    async def open_writer(self, key: str) -> SegmentWriter:
        return BrokenWriter()


async def test_storage_failure_fails_the_recording_not_the_call(database_url: str, tmp_path: Path) -> None:
    script = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=3.0, turns=())
    async with running_stack(
        database_url, tmp_path, script=script, pace=3, storage=BrokenStorage(tmp_path / "broken")
    ) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        recording = await stack.wait_for_recording(call_id)
        assert recording["status"] == "failed"
        assert "disk on fire" in recording["error"]
        call = (await stack.client.get(f"/v1/calls/{call_id}")).json()
        assert call["status"] == "ended", "the call itself is tracked to its end"
        failures = [e["payload"]["reason"] for e in await stack.events(call_id) if e["type"] == "listen.failed"]
        assert any("disk on fire" in reason for reason in failures)
        metrics = (await stack.client.get("/metrics")).text
        [errors] = [line for line in metrics.splitlines() if line.startswith("switchboard_storage_write_errors_total ")]
        assert float(errors.split()[1]) >= 3, "retried for as long as the call lasted"


async def test_shutdown_hands_the_call_over_and_a_restart_resumes_it(database_url: str, tmp_path: Path) -> None:
    script = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=12.0, turns=())
    sim = VapiSimulator(api_key=VAPI_KEY, pace=3, script=script)
    async with SimulatorServer(sim) as simulator:
        async with running_switchboard(database_url, tmp_path, simulator) as first:
            call_id = await first.place_call()
            await sim.wait_for_status(call_id, "in-progress")
            await wait_for_audio(sim, call_id, 40_000)
        # The first instance stopped mid-call: its recording is left open for the next one.
        assert sim.calls[call_id].status == "in-progress"
        async with running_switchboard(database_url, tmp_path, simulator) as second:
            await sim.wait_for_status(call_id, "ended", timeout=30)
            recording = await second.wait_for_recording(call_id)
            per_connection = sim.audio_sent_per_connection(call_id)
            assert len(per_connection) == 2
            pcm = await second.pcm(call_id)
            assert pcm == b"".join(per_connection), "what came before and after the restart, nothing else"
            assert recording["sha256"] == hashlib.sha256(pcm).hexdigest()
            assert recording["status"] == "partial"
            assert [gap["reason"] for gap in recording["gaps"]] == ["not recorded (restart or takeover)"]
