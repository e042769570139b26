"""recording.ogg: an Opus listening copy of the call's timeline, made once on demand, then served."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import soundfile
from litestar.testing import AsyncTestClient
from sqlalchemy import update

from service.app import create_app
from service.db.engine import Database
from service.db.models import Recording
from service.lifecycle.archive import Archiver
from tests.conftest import ADMIN_KEY, make_settings
from tests.lifecycle.conftest import storage_at
from tests.lifecycle.seed import RATE, seed_call, seed_recording, tone
from tests.lifecycle.test_archive import _seed


def _client(database_url: str, storage_url: str) -> AsyncTestClient[Any]:
    client = AsyncTestClient(create_app(make_settings(database_url, storage_url=storage_url)))
    client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
    return client


async def test_the_listening_copy_is_made_once_and_follows_the_timeline(database_url: str, storage_url: str) -> None:
    pcm = await _seed(database_url, storage_url)  # 2.5 s, a 1.5 s gap, 3 s
    async with _client(database_url, storage_url) as client:
        first, second = await asyncio.gather(
            client.get("/v1/calls/call-a/recording.ogg"), client.get("/v1/calls/call-a/recording.ogg")
        )
        again = await client.get("/v1/calls/call-a/recording.ogg")
        ranged = await client.get("/v1/calls/call-a/recording.ogg", headers={"range": "bytes=0-3"})
    assert first.status_code == second.status_code == again.status_code == 200, first.text
    assert first.headers["content-type"] == "audio/ogg"
    assert first.content == second.content == again.content, "one copy, made once"
    assert ranged.content == b"OggS"
    assert len(first.content) < len(pcm) / 10
    with soundfile.SoundFile(io.BytesIO(first.content)) as decoded:
        assert (decoded.samplerate, decoded.channels, decoded.subtype) == (RATE, 2, "OPUS")
        assert abs(decoded.frames / RATE - 7.0) < 0.05, "the call's timeline, gap included"
    listing = storage_at(storage_url)
    try:
        copies = [key for key in await listing.keys("call-a") if "listening-" in key]
    finally:
        await listing.close()
    assert len({key.split("/")[1] for key in copies}) == 1, copies


async def test_an_archived_recording_gets_its_listening_copy_too(database_url: str, storage_url: str) -> None:
    await _seed(database_url, storage_url)
    db, storage = Database(database_url), storage_at(storage_url)
    try:
        assert await Archiver(db, storage).archive_all() == (1, 0)
    finally:
        await storage.close()
        await db.dispose()
    async with _client(database_url, storage_url) as client:
        response = await client.get("/v1/calls/call-a/recording.ogg")
    assert response.status_code == 200
    with soundfile.SoundFile(io.BytesIO(response.content)) as decoded:
        assert abs(decoded.frames / RATE - 7.0) < 0.05


async def test_no_listening_copy_while_recording(database_url: str, tmp_path: Any) -> None:
    storage_url = f"file://{tmp_path}/recordings"
    db, storage = Database(database_url), storage_at(storage_url)
    try:
        await seed_call(db, "live", ended_ago=None)
        await seed_call(db, "silent", ended_ago=None)
        await seed_recording(db, storage, "live", [(None, tone(1.0))])
        async with db.write() as session:  # reopened: a listen session is still writing it
            await session.execute(update(Recording).where(Recording.call_id == "live").values(status="recording"))
    finally:
        await storage.close()
        await db.dispose()
    async with _client(database_url, storage_url) as client:
        busy = await client.get("/v1/calls/live/recording.ogg")
        none = await client.get("/v1/calls/silent/recording.ogg")
    assert busy.status_code == 409
    assert busy.json()["recordingStatus"] == "recording"
    assert none.status_code == 404
