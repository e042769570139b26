"""Batched, checksummed appends of one connection's audio to storage."""

from __future__ import annotations

import hashlib
import time

from service.recordings.storage import SegmentWriter

FLUSH_BYTES = 64 * 1024  # ~0.5 s of 16 kHz stereo
FLUSH_SECONDS = 1.0  # so that a kill -9 loses at most about a second


class RecordingWriter:
    """Buffers frames and writes them out at most every second (or every 64 KiB).

    One storage write per second per call instead of fifty keeps the listen path near the cost of
    just receiving the frames; the buffer is bounded by ``FLUSH_BYTES`` plus one frame.
    """

    def __init__(self, sink: SegmentWriter) -> None:
        self._sink = sink
        self._buffer = bytearray()
        self._digest = hashlib.sha256()
        self._last_flush = time.monotonic()
        self.bytes = 0

    async def append(self, frame: bytes) -> None:
        self._buffer += frame
        self.bytes += len(frame)
        if len(self._buffer) >= FLUSH_BYTES or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        self._digest.update(data)
        await self._sink.write(data)

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            await self._sink.close()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()
