"""Reading a recording's lossless archive (``{call_id}/recording.flac``, see service.lifecycle.archive)
as the exact PCM the raw segments held."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import BinaryIO

import soundfile

from service.recordings.audio import SAMPLE_BYTES, SegmentExtent
from service.recordings.storage import RecordingStorage

ARCHIVE_NAME = "recording.flac"
BLOCK_FRAMES = 65536  # 4 s of 16 kHz stereo, 256 KiB: what is in memory at once, encoding or decoding


def archive_key(call_id: str) -> str:
    """Where a call's archive is stored (inside the call's folder, so erasure removes it)."""
    return f"{call_id}/{ARCHIVE_NAME}"


class ArchivedAudio:
    """Reads a segment's bytes from a recording's FLAC archive (an :class:`~service.recordings.audio.AudioSource`).

    Segment ``i`` is the decoded archive's bytes ``[offset_i, offset_i + bytes_i)``: the segments in
    order, without their gaps.
    """

    def __init__(
        self, storage: RecordingStorage, call_id: str, extents: Sequence[SegmentExtent], channels: int
    ) -> None:
        self._storage = storage
        self._key = archive_key(call_id)
        self._frame = channels * SAMPLE_BYTES
        self._offsets: dict[str, int] = {}
        offset = 0
        for extent in extents:
            self._offsets[extent.key] = offset
            offset += extent.bytes

    async def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        begin, stop = self._offsets[key] + start, self._offsets[key] + end
        first_frame, skip = divmod(begin, self._frame)
        handle = await asyncio.to_thread(self._storage.open_file, self._key)
        try:
            decoder = await asyncio.to_thread(_decoder_at, handle, first_frame)
            try:
                remaining = stop - begin
                while remaining > 0:
                    block: bytes = await asyncio.to_thread(decoder.buffer_read, BLOCK_FRAMES, dtype="int16")
                    if not block:
                        return
                    piece = memoryview(block)[skip : skip + remaining]
                    skip = 0
                    remaining -= len(piece)
                    yield bytes(piece)
            finally:
                await asyncio.to_thread(decoder.close)
        finally:
            await asyncio.to_thread(handle.close)  # soundfile leaves a file object it was given open


def _decoder_at(handle: BinaryIO, frame: int) -> soundfile.SoundFile:
    decoder = soundfile.SoundFile(handle)
    decoder.seek(frame)
    return decoder
