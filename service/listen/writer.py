"""Batched, checksummed appends of one connection's audio to storage, off the receive path.

Frames are gathered in memory for at most a second (or 64 KiB), then handed through a bounded queue to
a writer task. The receiving loop never waits for storage unless storage is ``QUEUE_BATCHES`` seconds
behind (then it waits: backpressure reaches the socket, memory stays bounded). Storage errors are
retried briefly; after that the segment is marked failed and further audio is counted but not stored,
so the call carries on.
"""

from __future__ import annotations

import asyncio
import hashlib
import time

import structlog

from service.metrics import Metrics
from service.recordings.storage import SegmentWriter

log = structlog.get_logger(__name__)

FLUSH_BYTES = 64 * 1024  # ~0.5 s of 16 kHz stereo
FLUSH_SECONDS = 1.0  # so that a kill -9 loses at most about a second
QUEUE_BATCHES = 8
WRITE_ATTEMPTS = 3
RETRY_DELAYS = (0.2, 1.0)


class RecordingWriter:
    def __init__(self, sink: SegmentWriter, *, metrics: Metrics, name: str) -> None:
        self._sink = sink
        self._metrics = metrics
        self._buffer = bytearray()
        self._buffered_frames = 0
        self._digest = hashlib.sha256()
        self._last_flush = time.monotonic()
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_BATCHES)
        self._task = asyncio.create_task(self._drain(), name=f"writer:{name}")
        self.frames = 0
        self.bytes_received = 0
        self.bytes_written = 0
        self.error: str | None = None

    async def append(self, frame: bytes) -> None:
        """Take one frame; hand a batch to the writer task when a second or 64 KiB has gathered."""
        self._buffer += frame
        self._buffered_frames += 1
        if len(self._buffer) >= FLUSH_BYTES or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            await self.flush()

    async def flush_if_due(self) -> None:
        """Called every second by the session, so that sparse audio is not held back."""
        if self._buffer and time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            await self.flush()

    async def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        self.frames += self._buffered_frames
        self.bytes_received += len(data)
        self._metrics.listen_frames.inc(self._buffered_frames)
        self._metrics.listen_bytes.inc(len(data))
        self._buffered_frames = 0
        await self._queue.put(data)

    async def _drain(self) -> None:
        while (data := await self._queue.get()) is not None:
            if self.error is not None:
                continue
            try:
                await self._write(data)
            except Exception as exc:  # any storage failure ends storing, never the call
                self.error = f"storage write failed: {type(exc).__name__}: {exc}"[:500]
                log.error("recording storage failed; audio is no longer stored", error=self.error)
                continue
            self._digest.update(data)
            self.bytes_written += len(data)

    async def _write(self, data: bytes) -> None:
        for attempt in range(WRITE_ATTEMPTS):
            started = time.perf_counter()
            try:
                await self._sink.write(data)
            except Exception:
                self._metrics.storage_write_errors.inc()
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
            else:
                self._metrics.storage_write_seconds.observe(time.perf_counter() - started)
                return

    async def close(self) -> None:
        """Flush what is buffered, wait for every queued batch, close the sink."""
        try:
            await self.flush()
            await self._queue.put(None)
            await self._task
        finally:
            if not self._task.done():
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            await self._sink.close()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()
