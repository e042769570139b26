"""``switchboard serve --workers 2``: one port, two worker processes, each a replica with its own leases.

Marked slow: real processes (the supervisor and its workers), PostgreSQL, Redis and calls of several
seconds. Calls are placed through fresh connections, so that both workers accept some of them; a
listener on the port hears every call whichever worker records it; kill -9 of a worker hands its calls
to its sibling or to the worker started in its place within the lease; SIGTERM stops everything.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from service.db.models import Call
from service.simulator import CallScript, SimulatorServer, VapiSimulator
from tests.conftest import VAPI_KEY
from tests.harness import CALL, eventually
from tests.listen.test_processes import AUTH, recording_when_final
from tests.listen.test_replicas_redis import hear
from tests.listen.test_replicas_redis import redis_url as redis_url  # the fixture
from tests.processes import ServeProcess, serve_env, serve_process
from tests.servers import free_port

pytestmark = pytest.mark.slow
CALLS = 6
LEASE_SECONDS = 2.0


def workers_of(pid: int) -> set[int]:
    """The live worker processes of the supervisor ``pid``: its children started by multiprocessing's
    ``spawn_main`` (not its resource tracker), from /proc (field 4 of a process's stat is its parent)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid and fields[0] != "Z" and b"spawn_main" in command:
            found.add(int(entry.name))
    return found


def all_gone(pids: set[int]) -> bool:
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


def workers_started(serve: ServeProcess) -> int:
    return serve.log().count("Application startup complete")


async def lease_pids(database_url: str, call_ids: list[str]) -> dict[str, int]:
    """Each call's lease holder, as the pid in its replica id (``host:pid:suffix``)."""
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            rows = (await connection.execute(select(Call.id, Call.listen_owner).where(Call.id.in_(call_ids)))).all()
    finally:
        await engine.dispose()
    return {call_id: int(owner.split(":")[1]) for call_id, owner in rows if owner}


async def place_call(base_url: str) -> str:
    """``POST /v1/calls`` on a connection of its own: the kernel hands it to either worker."""
    async with httpx.AsyncClient(timeout=10) as fresh:
        created = await fresh.post(f"{base_url}/v1/calls", json=CALL, headers=AUTH)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def test_two_workers_share_the_port_and_take_over_a_killed_sibling(
    postgresql_url: str, redis_url: str, tmp_path: Path
) -> None:
    script = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=24.0, turns=())
    async with SimulatorServer(VapiSimulator(api_key=VAPI_KEY, pace=2.0, script=script)) as simulator:
        sim = simulator.sim
        port = free_port()
        env = serve_env(
            postgresql_url,
            tmp_path / "recordings",
            simulator.base_url,
            port,
            SWITCHBOARD_REDIS_URL=redis_url,
            SWITCHBOARD_LISTEN_LEASE_SECONDS=f"{LEASE_SECONDS:g}",
        )
        async with (
            httpx.AsyncClient(timeout=10) as client,
            serve_process(env, port, tmp_path / "serve.log", "--workers", "2", ready=60) as serve,
        ):
            supervisor = serve.process.pid
            await eventually(lambda: workers_started(serve) == 2, 60, interval=0.1, what="both workers started")
            first_workers = workers_of(supervisor)
            assert len(first_workers) == 2, first_workers

            # The worker that accepts a call's POST leases it; which one accepts is the kernel's choice, so
            # a few more calls are placed while one worker has them all (at most 3 x CALLS in all).
            call_ids = list(await asyncio.gather(*(place_call(serve.base_url) for _ in range(CALLS))))
            owners = await lease_pids(postgresql_url, call_ids)
            while set(owners.values()) != first_workers and len(call_ids) < 3 * CALLS:
                call_ids.append(await place_call(serve.base_url))
                owners = await lease_pids(postgresql_url, call_ids)
            for call_id in call_ids:
                await sim.wait_for_status(call_id, "in-progress")
            assert set(owners) == set(call_ids), "every live call is leased"
            assert set(owners.values()) == first_workers, f"both workers record calls: {owners}"
            await asyncio.sleep(1.0)
            for call_id in call_ids:
                assert len(sim.listen_records(call_id)) == 1, "each call recorded by exactly one worker"

            # A listener on the port, whichever worker accepts it, hears every call (Redis carries the frames).
            heard = await asyncio.gather(
                *(hear(f"ws://127.0.0.1:{port}/v1/calls/{call_id}/listen", 2.0) for call_id in call_ids)
            )
            for call_id, audio in zip(call_ids, heard, strict=True):
                assert len(audio) > 32_000, f"heard {len(audio)} bytes of {call_id}"
                assert audio in sim.audio_sent(call_id), "a contiguous stretch of the call's audio"

            # kill -9 of the worker with the most calls: its calls are recorded again within the lease.
            victim = max(first_workers, key=lambda pid: sum(owner == pid for owner in owners.values()))
            orphaned = [call_id for call_id, owner in owners.items() if owner == victim]
            os.kill(victim, signal.SIGKILL)
            killed_at = time.monotonic()
            await eventually(
                lambda: all(len(sim.listen_records(call_id)) >= 2 for call_id in orphaned),
                3 * LEASE_SECONDS + 5,
                interval=0.05,
                what="the killed worker's calls are listened to again",
            )
            takeover = time.monotonic() - killed_at
            await eventually(
                lambda: len(workers_of(supervisor) - {victim}) == 2, 60, interval=0.1, what="the worker is replaced"
            )
            now_workers = workers_of(supervisor)
            assert victim not in now_workers
            new_owners = await lease_pids(postgresql_url, orphaned)
            assert set(new_owners.values()) <= now_workers, "taken over by a live worker"

            for call_id in call_ids:
                await sim.wait_for_status(call_id, "ended", timeout=60)
            for call_id in call_ids:
                recording = await recording_when_final(client, serve.base_url, call_id)
                pcm = (await client.get(f"{serve.base_url}/v1/calls/{call_id}/recording.pcm", headers=AUTH)).content
                records = sim.listen_records(call_id)
                if call_id not in orphaned:
                    assert recording["status"] == "completed", recording
                    assert recording["sha256"] == records[0].sha256, "the simulator's audio, byte for byte"
                    continue
                before, *after = sim.audio_sent_per_connection(call_id)
                kept_before = len(pcm) - sum(len(part) for part in after)
                assert pcm[:kept_before] == before[:kept_before], "nothing before the kill was corrupted"
                assert pcm[kept_before:] == b"".join(after), "everything after the takeover was kept"
                assert recording["status"] == "partial"

            # SIGTERM to the supervisor stops every worker, cleanly.
            serve.process.send_signal(signal.SIGTERM)
            code = await asyncio.to_thread(serve.process.wait, 30)
            assert code == 0, serve.log()[-3000:]
            assert all_gone(now_workers), "no worker left behind"
    assert takeover < LEASE_SECONDS + 3, f"calls taken over {takeover:.2f} s after the kill"
    log = serve.log()
    assert "Traceback" not in log
    assert log.count("switchboard stopped") >= 2, "the workers shut down through the lifespan"


async def test_workers_stop_when_their_supervisor_is_killed(
    postgresql_url: str, redis_url: str, tmp_path: Path
) -> None:
    """kill -9 of the supervisor: its workers do not keep serving the port on their own (Linux)."""
    port = free_port()
    env = serve_env(
        postgresql_url, tmp_path / "recordings", "http://127.0.0.1:9", port, SWITCHBOARD_REDIS_URL=redis_url
    )
    async with serve_process(env, port, tmp_path / "serve.log", "--workers", "2", ready=60) as serve:
        await eventually(lambda: workers_started(serve) == 2, 60, interval=0.1, what="both workers started")
        workers = workers_of(serve.process.pid)
        assert len(workers) == 2
        serve.kill()
        await eventually(lambda: all_gone(workers), 20, interval=0.1, what="the workers stopped")
