"""The lossless archive: FLAC decodes to the exact PCM (sha256 equal), every download stays
byte-identical (PCM, WAV with gaps, one channel, ranges), raw segments go only after the round trip."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import io
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import soundfile
from litestar.testing import AsyncTestClient
from sqlalchemy import select, update

from service.app import create_app
from service.cli import main
from service.db.engine import Database
from service.db.models import Call, Recording, utcnow
from service.lifecycle.archive import ArchiveError, Archiver
from service.recordings.flac import archive_key
from service.recordings.service import RecordingService
from tests.conftest import ADMIN_KEY, make_settings, run_blocking
from tests.lifecycle.conftest import storage_at
from tests.lifecycle.seed import seed_call, seed_recording, tone

DOWNLOADS: list[tuple[str, dict[str, str]]] = [
    ("recording.pcm", {}),
    ("recording.pcm", {"range": "bytes=1001-70000"}),
    ("recording.pcm", {"range": "bytes=-333"}),
    ("recording.wav", {}),
    ("recording.wav", {"range": "bytes=20-300000"}),
    ("recording.wav?channel=customer", {}),
    ("recording.wav?channel=assistant", {"range": "bytes=77-150001"}),
]


async def _seed(database_url: str, storage_url: str, call_id: str = "call-a") -> bytes:
    """A finished call whose recording has two segments and a 1.5 s gap between them."""
    db, storage = Database(database_url), storage_at(storage_url)
    try:
        await seed_call(db, call_id, ended_ago=dt.timedelta(minutes=5))
        return await seed_recording(db, storage, call_id, [(None, tone(2.5)), (1.5, tone(3.0, hz=330, phase=7))])
    finally:
        await storage.close()
        await db.dispose()


async def _downloads(client: AsyncTestClient[Any], call_id: str) -> list[tuple[int, bytes, str | None]]:
    answers = []
    for path, headers in DOWNLOADS:
        response = await client.get(f"/v1/calls/{call_id}/{path}", headers=headers)
        answers.append((response.status_code, response.content, response.headers.get("content-range")))
    return answers


def _client(database_url: str, storage_url: str, **settings: Any) -> AsyncTestClient[Any]:
    client = AsyncTestClient(create_app(make_settings(database_url, storage_url=storage_url, **settings)))
    client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
    return client


async def test_an_archived_recording_serves_exactly_the_same_bytes(database_url: str, storage_url: str) -> None:
    pcm = await _seed(database_url, storage_url)
    async with _client(database_url, storage_url) as client:
        before = await _downloads(client, "call-a")
        raw = (await client.get("/v1/calls/call-a/recording")).json()
        not_yet = await client.get("/v1/calls/call-a/recording.flac")
    assert [status for status, _, _ in before] == [200, 206, 206, 200, 206, 200, 206]
    assert before[0][1] == pcm
    assert (raw["format"], raw["storedBytes"], raw["bytes"]) == ("pcm", len(pcm), len(pcm))
    assert not_yet.status_code == 404
    assert not_yet.json()["recordingFormat"] == "pcm"

    db, storage = Database(database_url), storage_at(storage_url)
    try:
        done, failed = await Archiver(db, storage).archive_all()
        assert (done, failed) == (1, 0)
        # S3 stores the archive as chunk objects under its key (recording.flac/00000000, ...).
        left = await storage.keys("call-a")
        assert left, "the archive is stored"
        assert all(key.startswith(archive_key("call-a")) for key in left), f"raw segments removed: {left}"
    finally:
        await storage.close()
        await db.dispose()

    async with _client(database_url, storage_url) as client:
        after = await _downloads(client, "call-a")
        archived = (await client.get("/v1/calls/call-a/recording")).json()
        flac = await client.get("/v1/calls/call-a/recording.flac")
        listed = (await client.get("/v1/recordings")).json()["data"]
        flac_range = await client.get("/v1/calls/call-a/recording.flac", headers={"range": "bytes=0-3"})
    assert after == before, "every download is byte-identical"
    assert archived["format"] == "flac"
    assert archived["bytes"] == len(pcm)
    assert archived["gaps"] == raw["gaps"] != []
    assert 0 < archived["storedBytes"] < len(pcm) * 0.7
    assert flac.status_code == 200
    assert flac.headers["content-type"] == "audio/flac"
    assert len(flac.content) == archived["storedBytes"]
    assert flac_range.content == b"fLaC"
    with soundfile.SoundFile(io.BytesIO(flac.content)) as decoded:
        assert (decoded.samplerate, decoded.channels, decoded.format) == (16000, 2, "FLAC")
        assert hashlib.sha256(decoded.buffer_read(dtype="int16")).hexdigest() == raw["sha256"]
        assert '"gaps"' in decoded.comment
    assert [(item["format"], item["storedBytes"]) for item in listed] == [("flac", archived["storedBytes"])]


async def test_the_app_archives_finished_recordings_when_asked(database_url: str, storage_url: str) -> None:
    pcm = await _seed(database_url, storage_url)
    async with _client(database_url, storage_url, archive_format="flac") as client:
        async with asyncio.timeout(20):
            while (recording := (await client.get("/v1/calls/call-a/recording")).json())["format"] != "flac":
                await asyncio.sleep(0.1)
        assert (await client.get("/v1/calls/call-a/recording.pcm")).content == pcm
        async with asyncio.timeout(10):
            while "switchboard_recordings_archived_total 1.0" not in (metrics := (await client.get("/metrics")).text):
                await asyncio.sleep(0.1)
    assert f'switchboard_recording_stored_bytes{{format="flac"}} {recording["storedBytes"]}.0' in metrics


async def test_audio_that_does_not_match_its_checksum_is_never_archived(database_url: str, tmp_path: Path) -> None:
    storage_url = f"file://{tmp_path}/recordings"
    pcm = await _seed(database_url, storage_url)
    segment = tmp_path / "recordings" / "call-a" / "0000.pcm"
    damaged = bytearray(segment.read_bytes())
    damaged[100] ^= 0xFF
    segment.write_bytes(bytes(damaged))
    db, storage = Database(database_url), storage_at(storage_url)
    try:
        with pytest.raises(ArchiveError, match="do not match"):
            await Archiver(db, storage).archive_next()
        assert await Archiver(db, storage).archive_next() is None, "claimed: not retried in a loop"
        assert sorted(await storage.keys("call-a")) == ["call-a/0000.pcm", "call-a/0001.pcm"], "raw kept"
    finally:
        await storage.close()
        await db.dispose()
    async with _client(database_url, storage_url) as client:
        recording = (await client.get("/v1/calls/call-a/recording")).json()
        assert recording["format"] == "pcm"
        assert len((await client.get("/v1/calls/call-a/recording.pcm")).content) == len(pcm)


async def test_an_archive_finished_while_its_call_is_erased_does_not_outlive_the_erasure(
    database_url: str, tmp_path: Path
) -> None:
    """Retention erases the oldest ended calls and the archiver archives the oldest recordings: both
    can take the same call. The eraser (tombstone, then the call's folder) runs while the FLAC uploads:
    the archive must go too, not be pointed at by a recording about to be deleted."""
    storage_url = f"file://{tmp_path}/recordings"
    await _seed(database_url, storage_url)
    db, storage = Database(database_url), storage_at(storage_url)

    class ErasedMeanwhile(Archiver):
        async def _upload(self, path: Path, key: str, size: int) -> None:
            await super()._upload(path, key, size)
            async with db.write() as session:  # the eraser's first two steps
                await session.execute(
                    update(Call).where(Call.id == "call-a").values(erasing_until=utcnow() + dt.timedelta(minutes=5))
                )
            await storage.delete_prefix("call-a")

    try:
        await ErasedMeanwhile(db, storage).archive_next()
        assert await storage.keys("call-a") == []
        async with db.read() as session:
            assert await session.scalar(select(Recording.format).where(Recording.call_id == "call-a")) == "pcm"
    finally:
        await storage.close()
        await db.dispose()


def test_the_archive_command_converts_existing_recordings(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    storage_url = f"file://{tmp_path}/recordings"

    async def seed_two() -> None:
        for call_id in ("call-1", "call-2"):
            await _seed(database_url, storage_url, call_id)

    run_blocking(seed_two())
    monkeypatch.setenv("SWITCHBOARD_DATABASE_URL", database_url)
    monkeypatch.setenv("SWITCHBOARD_STORAGE_URL", storage_url)
    assert main(["archive"]) == 0
    output = capsys.readouterr().err
    assert "2 recording(s) to archive" in output
    assert "archived 2/2" in output
    assert "2 archived, 0 failed" in output
    assert sorted(path.name for path in (tmp_path / "recordings").rglob("*")) == [
        "call-1",
        "call-2",
        "recording.flac",
        "recording.flac",
    ]


async def test_archiving_and_reading_an_archive_stream_in_blocks(database_url: str, tmp_path: Path) -> None:
    """A long recording is never held whole: Python allocations peak far below its size."""
    storage_url = f"file://{tmp_path}/recordings"
    db, storage = Database(database_url), storage_at(storage_url)
    minute = tone(60.0)
    try:
        await seed_call(db, "long", ended_ago=dt.timedelta(minutes=1))
        pcm = await seed_recording(db, storage, "long", [(None, minute * 3)])  # 11.5 MB
        del minute
        tracemalloc.start()
        try:
            assert (await Archiver(db, storage).archive_all()) == (1, 0)
            _, archive_peak = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            download = await RecordingService(db, storage).pcm_download("long")
            digest = hashlib.sha256()
            async for chunk in download.stream(0, download.total):
                digest.update(chunk)
            _, read_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    finally:
        await storage.close()
        await db.dispose()
    assert digest.hexdigest() == hashlib.sha256(pcm).hexdigest()
    assert archive_peak < len(pcm) / 4, f"archiving peaked at {archive_peak} bytes of Python memory"
    assert read_peak < len(pcm) / 4, f"reading peaked at {read_peak} bytes of Python memory"
