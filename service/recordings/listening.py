"""The listening copy: ``recording.ogg``, the call's timeline (gaps as silence) in Opus, for browsers and
the console's player. Made on the first request for a finished recording, stored beside the recording
(``{call_id}/listening-{id}.ogg``, so erasure removes it) and served from storage afterwards.

One encoder per call in a process (concurrent requests wait for the same one). Several replicas may
make one at the same time: each writes its own object, the first to record its key in the recording's
row wins, the others delete theirs. Encoding moves blocks, never the whole call.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import soundfile
from sqlalchemy import select, update

from service.db.engine import Database
from service.db.models import Recording
from service.recordings.audio import SAMPLE_BYTES
from service.recordings.storage import RecordingStorage

UPLOAD_CHUNK_BYTES = 1024 * 1024
OPUS_LEVEL = 0.95  # libsndfile maps 0..1 onto the Opus bitrate, high to low: about 40 kb/s for 16 kHz stereo


class ListeningCopies:
    def __init__(self, db: Database, storage: RecordingStorage) -> None:
        self._db = db
        self._storage = storage
        self._making: dict[str, asyncio.Future[tuple[str, int]]] = {}

    async def ensure(self, recording: Recording, timeline: AsyncIterator[bytes]) -> tuple[str, int]:
        """The listening copy's storage key and size; made from ``timeline`` (the recording's PCM with
        its gaps as silence) when there is none yet. ``timeline`` is not read when a copy exists."""
        if recording.listening_key is not None and recording.listening_bytes is not None:
            return recording.listening_key, recording.listening_bytes
        making = self._making.get(recording.call_id)
        if making is None:
            making = asyncio.ensure_future(self._make(recording, timeline))
            self._making[recording.call_id] = making
            making.add_done_callback(lambda _: self._making.pop(recording.call_id, None))
        # Shielded: a client that goes away does not cancel the copy others wait for.
        return await asyncio.shield(making)

    async def _recorded(self, recording: Recording) -> tuple[str, int] | None:
        query = select(Recording.listening_key, Recording.listening_bytes).where(Recording.id == recording.id)
        async with self._db.read() as session:
            row = (await session.execute(query)).one_or_none()
        if row is None or row.listening_key is None:
            return None
        return row.listening_key, int(row.listening_bytes or 0)

    async def _make(self, recording: Recording, timeline: AsyncIterator[bytes]) -> tuple[str, int]:
        if (made := await self._recorded(recording)) is not None:  # by another replica meanwhile
            return made
        key = f"{recording.call_id}/listening-{uuid.uuid4().hex[:12]}.ogg"
        size = await self._encode_and_store(recording, timeline, key)
        async with self._db.write() as session:
            won = await session.execute(
                update(Recording)
                .where(Recording.id == recording.id, Recording.listening_key.is_(None))
                .values(listening_key=key, listening_bytes=size)
            )
        if won.rowcount:  # type: ignore[attr-defined]  # a CursorResult for updates
            return key, size
        await self._storage.delete(key)  # another replica's copy was recorded first
        made = await self._recorded(recording)
        assert made is not None
        return made

    async def _encode_and_store(self, recording: Recording, timeline: AsyncIterator[bytes], key: str) -> int:
        frame = recording.channels * SAMPLE_BYTES
        with tempfile.TemporaryDirectory(prefix="switchboard-listening-") as folder:
            path = Path(folder) / "listening.ogg"
            encoder: Any = await asyncio.to_thread(
                soundfile.SoundFile,
                path,
                "w",
                samplerate=recording.sample_rate,
                channels=recording.channels,
                format="OGG",
                subtype="OPUS",
                compression_level=OPUS_LEVEL,
            )
            try:
                carry = b""
                async for chunk in timeline:
                    data = carry + chunk
                    whole = len(data) - len(data) % frame  # the encoder takes whole frames
                    carry = data[whole:]
                    if whole:
                        await asyncio.to_thread(encoder.buffer_write, data[:whole], dtype="int16")
            finally:
                await asyncio.to_thread(encoder.close)
            size = (await asyncio.to_thread(path.stat)).st_size
            writer = await self._storage.open_writer(key)
            try:
                with path.open("rb") as source:
                    while piece := await asyncio.to_thread(source.read, UPLOAD_CHUNK_BYTES):
                        await writer.write(piece)
            finally:
                await writer.close()
        return size
