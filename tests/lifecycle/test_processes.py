"""kill -9 of ``switchboard serve`` in the middle of an erasure: the next process finishes it.

Marked slow: real child processes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from service.db.engine import Database
from service.db.models import Call
from service.simulator import SimulatorServer, VapiSimulator
from tests.conftest import ADMIN_KEY, VAPI_KEY
from tests.lifecycle.conftest import rows_of, storage_at
from tests.lifecycle.seed import seed_call, seed_recording, tone
from tests.processes import serve_env, serve_process
from tests.servers import free_port

pytestmark = pytest.mark.slow
AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}
CLUTTER_FILES = 20_000  # enough objects under the call's folder that deleting them takes a while


async def _tombstoned(db: Database, call_id: str) -> bool:
    async with db.read() as session:
        return await session.scalar(select(Call.erasing_until).where(Call.id == call_id)) is not None


async def test_kill_9_during_an_erasure_is_finished_by_the_next_process(database_url: str, tmp_path: Path) -> None:
    root = tmp_path / "recordings"
    db, storage = Database(database_url), storage_at(f"file://{root}")
    try:
        await seed_call(db, "doomed", ended_ago=dt.timedelta(minutes=3))
        await seed_recording(db, storage, "doomed", [(None, tone(1.0))])
        clutter = root / "doomed" / "clutter"
        clutter.mkdir()
        for i in range(CLUTTER_FILES):
            (clutter / f"{i:05d}").write_bytes(b"x")
        await seed_call(db, "bystander", ended_ago=dt.timedelta(minutes=3))
        await seed_recording(db, storage, "bystander", [(None, tone(1.0))])
    finally:
        await storage.close()

    port = free_port()
    try:
        async with SimulatorServer(VapiSimulator(api_key=VAPI_KEY)) as vapi, httpx.AsyncClient(timeout=30) as client:
            env = serve_env(database_url, root, vapi.base_url, port, SWITCHBOARD_ERASURE_CLAIM_SECONDS="2")
            async with serve_process(env, port, tmp_path / "first.log") as first:
                request = asyncio.create_task(client.delete(f"{first.base_url}/v1/calls/doomed", headers=AUTH))
                async with asyncio.timeout(10):
                    while not await _tombstoned(db, "doomed"):
                        await asyncio.sleep(0.002)
                first.kill()  # the tombstone is committed; the storage deletes are under way
                with pytest.raises(httpx.TransportError):
                    await request
            rows = await rows_of(database_url, "doomed")
            assert rows["call"] == 1, "killed before the rows went"
            assert rows["recording"] == 1
            assert (root / "doomed").exists(), "killed before the folder went"

            async with serve_process(env, port, tmp_path / "second.log") as second:
                async with asyncio.timeout(20):  # the first process's claim lapses (2 s), the sweep finishes
                    while (await client.get(f"{second.base_url}/v1/calls/doomed", headers=AUTH)).status_code != 404:
                        await asyncio.sleep(0.1)
                bystander = await client.get(f"{second.base_url}/v1/calls/bystander/recording.pcm", headers=AUTH)
                assert bystander.content == tone(1.0), "only the erased call went"
                log = second.log()
    finally:
        await db.dispose()
    assert set((await rows_of(database_url, "doomed")).values()) == {0}
    assert not (root / "doomed").exists()
    assert "call erased" in log
