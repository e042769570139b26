"""Replicas behind one load balancer, sharing Redis: a listener on the replica that does not record a
call hears it, and the console feed on either replica shows a change made through the other."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httpx
import pytest
import redis.asyncio
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.simulator import CallScript, SimulatorServer, VapiSimulator
from tests.conftest import ADMIN_KEY, VAPI_KEY
from tests.harness import CALL
from tests.processes import serve_env, serve_process
from tests.servers import free_port

pytestmark = pytest.mark.slow
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def redis_url() -> str:
    client = redis.asyncio.Redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (OSError, redis.RedisError) as exc:
        if os.environ.get("SWITCHBOARD_TEST_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis is required but unreachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis unreachable at {REDIS_URL}: {exc}")
    finally:
        await client.aclose()
    return REDIS_URL


async def hear(url: str, seconds: float) -> bytes:
    """The binary frames a listener receives in ``seconds``."""
    received = bytearray()
    async with connect(url, additional_headers=AUTH) as socket:
        try:
            async with asyncio.timeout(seconds):
                async for message in socket:
                    if isinstance(message, bytes):
                        received += message
        except (TimeoutError, ConnectionClosed):
            pass
    return bytes(received)


async def first_change(response: httpx.Response, call_id: str, ready: asyncio.Event) -> float:
    """When the console stream first sends ``call_id`` after ``ready`` was set (loop time)."""
    event = ""
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: ") and event == "call" and ready.is_set() and call_id in line:
            return asyncio.get_running_loop().time()
    raise AssertionError("the stream ended")


async def test_every_replica_serves_every_live_call(postgresql_url: str, redis_url: str, tmp_path: Path) -> None:
    script = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=30.0, turns=())
    async with SimulatorServer(VapiSimulator(api_key=VAPI_KEY, pace=2.0, script=script)) as simulator:
        sim = simulator.sim
        storage = tmp_path / "recordings"
        port_a, port_b = free_port(), free_port()
        env_a = serve_env(postgresql_url, storage, simulator.base_url, port_a, SWITCHBOARD_REDIS_URL=redis_url)
        env_b = serve_env(postgresql_url, storage, simulator.base_url, port_b, SWITCHBOARD_REDIS_URL=redis_url)
        async with (
            httpx.AsyncClient(timeout=10) as client,
            serve_process(env_a, port_a, tmp_path / "a.log") as replica_a,
            serve_process(env_b, port_b, tmp_path / "b.log") as replica_b,
        ):
            created = await client.post(f"{replica_a.base_url}/v1/calls", json=CALL, headers=AUTH)
            assert created.status_code == 201, created.text
            call_id = created.json()["id"]
            await sim.wait_for_status(call_id, "in-progress")
            async with asyncio.timeout(10):
                while not sim.listen_records(call_id):
                    await asyncio.sleep(0.05)

            # B does not record the call (A leased it when placing it), yet its listener hears it.
            heard = await hear(f"{replica_b.base_url.replace('http', 'ws')}/v1/calls/{call_id}/listen", 3.0)
            assert len(heard) > 32_000, f"heard {len(heard)} bytes through the other replica"
            assert heard in sim.audio_sent(call_id), "a contiguous stretch of the call's audio"
            assert len(sim.listen_records(call_id)) == 1, "still one upstream connection"

            # A change made through A reaches the console feed of B within a second.
            ready = asyncio.Event()
            async with client.stream("GET", f"{replica_b.base_url}/v1/console/stream", headers=AUTH) as stream:
                seen = asyncio.create_task(first_change(stream, call_id, ready))
                await asyncio.sleep(0.5)  # the first batch (recent changes) has gone by
                ready.set()
                said_at = asyncio.get_running_loop().time()
                said = await client.post(
                    f"{replica_a.base_url}/v1/calls/{call_id}/say", json={"content": "Hello"}, headers=AUTH
                )
                assert said.status_code == 202, said.text
                async with asyncio.timeout(5):
                    seen_at = await seen
            assert seen_at - said_at < 1.0, f"B's console saw A's change after {seen_at - said_at:.2f} s"
