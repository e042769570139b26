"""Process-level guarantees: kill -9 of ``switchboard serve`` mid-call, and replicas taking over.

Marked slow: real child processes and calls of several seconds. CI runs them in their own group.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from service.listen.writer import FLUSH_BYTES
from service.settings import Settings
from service.simulator import CallScript, SimulatorServer, VapiSimulator
from tests.conftest import ADMIN_KEY, VAPI_KEY
from tests.harness import CALL, FINAL_RECORDING, eventually
from tests.processes import serve_env, serve_process
from tests.servers import free_port

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
FRAME = 1280
AUDIO_BYTES_PER_SECOND = 64_000
READ_INTERVAL = Settings.model_fields["listen_read_interval_ms"].default / 1000


async def recording_when_final(client: httpx.AsyncClient, base_url: str, call_id: str) -> dict[str, object]:
    async def final() -> dict[str, object] | None:
        response = await client.get(f"{base_url}/v1/calls/{call_id}/recording", headers=AUTH)
        body: dict[str, object] = response.json()
        return body if response.status_code == 200 and body["status"] in FINAL_RECORDING else None

    return await eventually(final, 40, interval=0.1, what=f"the recording of {call_id} is final")


async def test_kill_9_mid_call_keeps_what_came_before_and_after(database_url: str, tmp_path: Path) -> None:
    pace = 2.0
    script = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=24.0, turns=())
    async with SimulatorServer(VapiSimulator(api_key=VAPI_KEY, pace=pace, script=script)) as simulator:
        sim = simulator.sim
        port = free_port()
        env = serve_env(database_url, tmp_path / "recordings", simulator.base_url, port)
        async with httpx.AsyncClient() as client:
            async with serve_process(env, port, tmp_path / "first.log") as first:
                created = await client.post(f"{first.base_url}/v1/calls", json=CALL, headers=AUTH)
                assert created.status_code == 201, created.text
                call_id = created.json()["id"]
                await sim.wait_for_status(call_id, "in-progress")
                await eventually(lambda: len(sim.audio_sent(call_id)) >= 6 * 64_000, 15, what="6 s of audio were sent")
                first.kill()
            async with serve_process(env, port, tmp_path / "second.log") as second:
                await sim.wait_for_status(call_id, "ended", timeout=40)
                recording = await recording_when_final(client, second.base_url, call_id)
                pcm = (await client.get(f"{second.base_url}/v1/calls/{call_id}/recording.pcm", headers=AUTH)).content

    before, *after = sim.audio_sent_per_connection(call_id)
    assert after, "the restarted service listened again"
    kept_before = len(pcm) - sum(len(part) for part in after)
    assert pcm[:kept_before] == before[:kept_before], "nothing before the kill was corrupted"
    assert pcm[kept_before:] == b"".join(after), "everything after the restart was kept"
    lost = len(before) - kept_before
    # What a kill can lose: one flush of the writer, plus what waited in the kernel for the next read
    # (the read interval, in audio sent at this pace) — under a second of audio at real time.
    unread = pace * READ_INTERVAL * AUDIO_BYTES_PER_SECOND
    assert FLUSH_BYTES + READ_INTERVAL * AUDIO_BYTES_PER_SECOND < AUDIO_BYTES_PER_SECOND, "the contract's second"
    assert 0 <= lost <= FLUSH_BYTES + unread + 2 * FRAME, f"lost {lost} bytes at the kill: more than a flush and a read"
    assert recording["status"] == "partial"
    assert recording["gaps"]


async def test_a_dead_replicas_calls_are_taken_over_within_seconds(postgresql_url: str, tmp_path: Path) -> None:
    script = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=40.0, turns=())
    async with SimulatorServer(VapiSimulator(api_key=VAPI_KEY, pace=2.0, script=script)) as simulator:
        sim = simulator.sim
        storage = tmp_path / "recordings"
        port_a, port_b = free_port(), free_port()
        env_a = serve_env(postgresql_url, storage, simulator.base_url, port_a)
        env_b = serve_env(postgresql_url, storage, simulator.base_url, port_b)
        async with (
            httpx.AsyncClient() as client,
            serve_process(env_a, port_a, tmp_path / "a.log") as replica_a,
            serve_process(env_b, port_b, tmp_path / "b.log") as replica_b,
        ):
            call_ids = []
            for _ in range(3):
                created = await client.post(f"{replica_a.base_url}/v1/calls", json=CALL, headers=AUTH)
                assert created.status_code == 201, created.text
                call_ids.append(created.json()["id"])
            for call_id in call_ids:
                await sim.wait_for_status(call_id, "in-progress")
            await asyncio.sleep(2)
            for call_id in call_ids:
                assert len(sim.listen_records(call_id)) == 1, "each live call is recorded by exactly one replica"

            replica_a.kill()
            killed_at = asyncio.get_running_loop().time()
            await eventually(
                lambda: all(len(sim.listen_records(call_id)) >= 2 for call_id in call_ids),
                interval=0.05,
                what="replica B listens to every call",
            )
            takeover = asyncio.get_running_loop().time() - killed_at
            assert takeover < 10

            for call_id in call_ids:
                await sim.wait_for_status(call_id, "ended", timeout=60)
            for call_id in call_ids:
                recording = await recording_when_final(client, replica_b.base_url, call_id)
                pcm = (await client.get(f"{replica_b.base_url}/v1/calls/{call_id}/recording.pcm", headers=AUTH)).content
                before, *after = sim.audio_sent_per_connection(call_id)
                kept_before = len(pcm) - sum(len(part) for part in after)
                assert pcm[:kept_before] == before[:kept_before]
                assert pcm[kept_before:] == b"".join(after)
                assert recording["status"] == "partial"
                assert len(recording["segments"]) == 1 + len(after)  # type: ignore[arg-type]


async def test_a_restart_on_the_same_host_resumes_listening_at_once(database_url: str, tmp_path: Path) -> None:
    """kill -9, then an immediate restart on the same data: the old process's lease (30 s here) is not
    waited for; listening resumes as soon as the new process is up."""
    script = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=30.0, turns=())
    async with SimulatorServer(VapiSimulator(api_key=VAPI_KEY, pace=2.0, script=script)) as simulator:
        sim = simulator.sim
        port = free_port()
        env = serve_env(
            database_url, tmp_path / "recordings", simulator.base_url, port, SWITCHBOARD_LISTEN_LEASE_SECONDS="30"
        )
        async with httpx.AsyncClient() as client:
            async with serve_process(env, port, tmp_path / "first.log") as first:
                created = await client.post(f"{first.base_url}/v1/calls", json=CALL, headers=AUTH)
                assert created.status_code == 201, created.text
                call_id = created.json()["id"]
                await sim.wait_for_status(call_id, "in-progress")
                async with asyncio.timeout(15):
                    while len(sim.audio_sent(call_id)) < 2 * 64_000:
                        await asyncio.sleep(0.02)
                first.kill()
            async with serve_process(env, port, tmp_path / "second.log") as second:
                healthy_at = asyncio.get_running_loop().time()
                async with asyncio.timeout(10):
                    while len(sim.listen_records(call_id)) < 2:
                        await asyncio.sleep(0.02)
                resumed_after = asyncio.get_running_loop().time() - healthy_at
                await sim.wait_for_status(call_id, "ended", timeout=40)
                recording = await recording_when_final(client, second.base_url, call_id)
    assert resumed_after < 1.0, f"listening resumed {resumed_after:.2f} s after the restart was healthy"
    assert "taken over" in second.log()
    assert recording["status"] == "partial"
    assert len(recording["gaps"]) == 1  # type: ignore[arg-type]
