"""Finalising a recording whose last session died with its segment open."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from pathlib import Path
from typing import Any, cast

from sqlalchemy import select

from service.db.engine import Database
from service.db.models import Call, RecordingSegment
from service.recordings.service import RecordingService
from service.recordings.storage import build_storage


async def test_a_segment_left_open_by_a_dead_session_is_closed_at_its_stored_size(
    database_url: str, tmp_path: Path
) -> None:
    """A replica dies mid-call (no close_segment) and the call ends before anyone adopts it: the
    recording is finalised with the audio storage holds, and the end it never heard is a gap."""
    db = Database(database_url)
    storage = build_storage(f"file://{tmp_path}")
    recordings = RecordingService(db, storage)
    try:
        async with db.write() as session:
            session.add(Call(id="c1", status="in-progress", listen_url="ws://vapi.test/c1/listen"))
        segment = await recordings.open_segment(
            "c1", sample_rate=16_000, channels=2, gap_seconds=None, gap_reason="first"
        )
        audio = bytes(range(256)) * 500 + b"\x01\x02"  # 2 s of 16 kHz stereo, and half a frame
        writer = await storage.open_writer(segment.key)
        await writer.write(audio)
        await writer.close()
        async with db.write() as session:  # the call ended 5 s after the segment started: 3 s unheard
            call = await session.get(Call, "c1")
            assert call is not None
            call.status = "ended"
            started = await session.scalar(
                select(RecordingSegment.started_at).where(RecordingSegment.id == segment.segment_id)
            )
            assert started is not None
            call.ended_at = started + dt.timedelta(seconds=5)

        finalized = await recordings.finalize("c1")

        assert finalized is not None
        whole = audio[: len(audio) - len(audio) % 4]
        assert (finalized.status, finalized.bytes, finalized.seconds) == ("partial", len(whole), 2.0)
        assert finalized.sha256 == hashlib.sha256(whole).hexdigest()
        [gap] = finalized.gaps
        assert (gap["atSeconds"], gap["reason"]) == (2.0, "not recorded (restart or takeover)")
        assert abs(gap["durationSeconds"] - 3.0) < 0.2
    finally:
        await storage.close()
        await db.dispose()


async def test_a_takeover_reads_the_stale_segments_size_outside_the_write_transaction(
    database_url: str, tmp_path: Path
) -> None:
    """The next connection after a takeover closes the dead session's open segment at its stored size.
    Reading that size (a LIST on object storage, retried for seconds when it is slow) must not hold the
    database's writer: on SQLite every webhook waits behind it."""
    db = Database(database_url)
    inner = build_storage(f"file://{tmp_path}")
    writer_free: list[bool] = []

    class Probing:
        def __getattr__(self, name: str) -> Any:
            return getattr(inner, name)

        async def size(self, key: str) -> int:
            try:
                async with asyncio.timeout(1):
                    async with db.write():
                        pass
                writer_free.append(True)
            except TimeoutError:
                writer_free.append(False)
            return await inner.size(key)

    recordings = RecordingService(db, cast(Any, Probing()))
    try:
        async with db.write() as session:
            session.add(Call(id="c2", status="in-progress", listen_url="ws://vapi.test/c2/listen"))
        first = await recordings.open_segment("c2", sample_rate=16_000, channels=2, gap_seconds=None, gap_reason="a")
        writer = await inner.open_writer(first.key)
        await writer.write(b"\x05" * 64_002)
        await writer.close()

        second = await recordings.open_segment(
            "c2", sample_rate=16_000, channels=2, gap_seconds=None, gap_reason="not recorded (restart or takeover)"
        )

        assert second.index == 1
        assert writer_free == [True]
        async with db.read() as session:
            closed = await session.get(RecordingSegment, first.segment_id)
            assert closed is not None
            assert (closed.status, closed.bytes) == ("closed", 64_000)
    finally:
        await inner.close()
        await db.dispose()
