"""Retention: the sweep erases only calls that ended long enough ago and are not held; several
replicas never erase the same call; a pass is bounded."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from litestar.testing import AsyncTestClient

from service.app import create_app
from service.db.engine import Database
from service.lifecycle.erasure import Eraser
from service.lifecycle.worker import LifecycleWorker
from service.metrics import Metrics
from service.simulator import SimulatorServer, VapiSimulator
from tests.conftest import ADMIN_KEY, VAPI_KEY, make_settings
from tests.lifecycle.conftest import rows_of, storage_at
from tests.lifecycle.seed import seed_call, seed_recording, tone

HOUR = dt.timedelta(hours=1)


async def test_retention_erases_only_old_unheld_calls(database_url: str, storage_url: str) -> None:
    db, storage = Database(database_url), storage_at(storage_url)
    try:
        await seed_call(db, "old", ended_ago=2 * HOUR)
        await seed_recording(db, storage, "old", [(None, tone(1.0))])
        await seed_call(db, "old-held", ended_ago=2 * HOUR, held=True)
        await seed_recording(db, storage, "old-held", [(None, tone(1.0))])
        await seed_call(db, "recent", ended_ago=dt.timedelta(minutes=10))
        await seed_call(db, "live", ended_ago=None)
    finally:
        await db.dispose()
    async with SimulatorServer(VapiSimulator(api_key=VAPI_KEY)) as vapi:
        settings = make_settings(
            database_url,
            storage_url=storage_url,
            vapi_base_url=vapi.base_url,
            retention="1h",
            retention_sweep_seconds=0.2,
        )
        async with AsyncTestClient(create_app(settings)) as client:
            client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
            async with asyncio.timeout(10):
                while (await client.get("/v1/calls/old")).status_code != 404:
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # more passes: nothing else goes
            for kept in ("old-held", "recent", "live"):
                assert (await client.get(f"/v1/calls/{kept}")).status_code == 200, kept
            assert (await client.get("/v1/calls/old-held/recording.pcm")).content == tone(1.0)
            metrics = (await client.get("/metrics")).text
    assert 'switchboard_calls_erased_total{reason="retention"} 1.0' in metrics
    assert f'switchboard_recording_stored_bytes{{format="pcm"}} {len(tone(1.0))}.0' in metrics
    assert set((await rows_of(database_url, "old")).values()) == {0}
    listing = storage_at(storage_url)
    try:
        assert await listing.keys("old") == []
        assert await listing.keys("old-held") != []
    finally:
        await listing.close()


async def test_replicas_claim_disjoint_calls_and_passes_are_bounded(database_url: str, tmp_path: Path) -> None:
    seeding = Database(database_url)
    try:
        for i in range(7):
            await seed_call(seeding, f"expired-{i}", ended_ago=(2 + i) * HOUR)
    finally:
        await seeding.dispose()
    replicas = [Database(database_url) for _ in range(2)]
    storages = [storage_at(f"file://{tmp_path}/recordings") for _ in replicas]
    erasers = [Eraser(db, storage) for db, storage in zip(replicas, storages, strict=True)]
    try:
        claims = await asyncio.gather(*(eraser.claim(retention=3600, limit=3) for eraser in erasers))
        ids: list[list[str]] = [[call_id for call_id, _ in claim] for claim in claims]
        assert all(len(claimed) == 3 for claimed in ids), ids
        assert not set(ids[0]) & set(ids[1]), "one eraser per call"
        # Claimed calls are skipped by the next claims until their claim lapses.
        [rest] = [[call_id for call_id, _ in await erasers[0].claim(retention=3600, limit=10)]]
        assert set(rest) == {f"expired-{i}" for i in range(7)} - set(ids[0]) - set(ids[1])

        worker = LifecycleWorker(replicas[1], erasers[1], Metrics(), retention=3600, sweep_seconds=60, batch=2)
        await seed_call(replicas[1], "another", ended_ago=5 * HOUR)
        assert await worker.sweep() == 1, "one call left to claim, one pass"
    finally:
        for db, storage in zip(replicas, storages, strict=True):
            await storage.close()
            await db.dispose()


async def test_a_pass_erases_at_most_a_batch(database_url: str, tmp_path: Path) -> None:
    db, storage = Database(database_url), storage_at(f"file://{tmp_path}/recordings")
    try:
        for i in range(5):
            await seed_call(db, f"old-{i}", ended_ago=3 * HOUR)
        worker = LifecycleWorker(db, Eraser(db, storage), Metrics(), retention=3600, sweep_seconds=60, batch=2)
        assert [await worker.sweep() for _ in range(4)] == [2, 2, 1, 0]
    finally:
        await storage.close()
        await db.dispose()
