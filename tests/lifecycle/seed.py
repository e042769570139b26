"""Calls and recordings written through the services' own code paths, with chosen ages."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import struct

from service.db.engine import Database
from service.db.models import Call, utcnow
from service.recordings.service import RecordingService
from service.recordings.storage import RecordingStorage

RATE, CHANNELS = 16000, 2


def tone(seconds: float, *, hz: float = 440.0, phase: int = 0) -> bytes:
    """Stereo s16le speech-like audio: a tone on the customer channel, another on the assistant's."""
    frames = int(seconds * RATE)
    samples = []
    for n in range(phase, phase + frames):
        envelope = 0.5 + 0.5 * math.sin(2 * math.pi * 3 * n / RATE)
        samples.append(int(9000 * envelope * math.sin(2 * math.pi * hz * n / RATE)))
        samples.append(int(7000 * math.sin(2 * math.pi * hz * 1.5 * n / RATE)) ^ (n & 7))
    return struct.pack(f"<{len(samples)}h", *samples)


async def seed_call(
    db: Database,
    call_id: str,
    *,
    ended_ago: dt.timedelta | None,
    held: bool = False,
    created_ago: dt.timedelta = dt.timedelta(days=400),
) -> None:
    """A call row: ended ``ended_ago`` ago (None: still in progress)."""
    now = utcnow()
    async with db.write() as session:
        session.add(
            Call(
                id=call_id,
                status="ended" if ended_ago is not None else "in-progress",
                customer={},
                call_metadata={"seeded": True},
                created_at=now - created_ago,
                started_at=now - created_ago,
                ended_at=now - ended_ago if ended_ago is not None else None,
                legal_hold=held,
            )
        )


async def seed_recording(
    db: Database, storage: RecordingStorage, call_id: str, pieces: list[tuple[float | None, bytes]]
) -> bytes:
    """A finished recording of one segment per piece (``(gap seconds before, PCM)``); its PCM."""
    recordings = RecordingService(db, storage)
    for gap, pcm in pieces:
        segment = await recordings.open_segment(
            call_id, sample_rate=RATE, channels=CHANNELS, gap_seconds=gap, gap_reason="reconnect"
        )
        writer = await storage.open_writer(segment.key)
        for start in range(0, len(pcm), 64000):
            await writer.write(pcm[start : start + 64000])
        await writer.close()
        await recordings.close_segment(segment, size=len(pcm), sha256=hashlib.sha256(pcm).hexdigest())
    finalized = await recordings.finalize(call_id)
    assert finalized is not None
    return b"".join(pcm for _, pcm in pieces)
