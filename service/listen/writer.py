"""Batched, checksummed appends of one connection's audio to storage, off the receive path.

Frames are gathered in memory for at most a second (or 48 KiB), then handed through a bounded queue to
a writer task. Taking a frame is synchronous (no task switch per frame); when storage is
``QUEUE_BATCHES`` seconds behind, the writer asks its caller to stop reading the socket until it catches
up (backpressure reaches the socket, memory stays bounded). Storage errors are
retried briefly; after that the segment is marked failed and further audio is counted but not stored,
so the call carries on.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable

import structlog

from service.metrics import Metrics
from service.recordings.storage import SegmentWriter

log = structlog.get_logger(__name__)

# ~0.75 s of 16 kHz stereo: with the listen socket's read interval (at most 0.2 s of audio waiting in the
# kernel by default), a kill -9 loses under a second of audio.
FLUSH_BYTES = 48 * 1024
FLUSH_SECONDS = 1.0  # so that a kill -9 loses at most about a second
QUEUE_BATCHES = 8
WRITE_ATTEMPTS = 3
RETRY_DELAYS = (0.2, 1.0)


class RecordingWriter:
    """Takes one connection's binary frames synchronously (from the socket's ``data_received``).

    ``pressure(True)`` is called when storage is ``QUEUE_BATCHES`` batches behind: the caller stops
    reading the socket until ``pressure(False)``, so memory stays bounded and backpressure reaches Vapi.
    """

    def __init__(
        self,
        sink: SegmentWriter,
        *,
        metrics: Metrics,
        name: str,
        pressure: Callable[[bool], None] | None = None,
    ) -> None:
        self._sink = sink
        self._metrics = metrics
        self._pressure = pressure
        self._blocked = False
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

    def append(self, frame: bytes | bytearray | memoryview) -> None:
        """Take one frame; hand a batch to the writer task when a second or 48 KiB has gathered."""
        buffer = self._buffer
        buffer += frame
        self._buffered_frames += 1
        if len(buffer) >= FLUSH_BYTES or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush_nowait()

    @property
    def received(self) -> int:
        """Bytes taken so far, handed over or still gathering."""
        return self.bytes_received + len(self._buffer)

    def flush_if_due(self) -> None:
        """Called every second by the session, so that sparse audio is not held back."""
        if self._buffer and time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush_nowait()

    def flush_nowait(self) -> None:
        """Hand what gathered to the writer task, unless its queue is full (then keep it: backpressure)."""
        self._last_flush = time.monotonic()
        if not self._buffer:
            return
        if self._queue.full():
            if not self._blocked:
                self._blocked = True
                if self._pressure is not None:
                    self._pressure(True)
            return
        self._queue.put_nowait(self._take())

    async def flush(self) -> None:
        """Hand over what gathered, waiting for room in the queue if storage is behind."""
        self._last_flush = time.monotonic()
        if self._buffer:
            await self._queue.put(self._take())

    def _take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        self.frames += self._buffered_frames
        self.bytes_received += len(data)
        self._metrics.listen_frames.inc(self._buffered_frames)
        self._metrics.listen_bytes.inc(len(data))
        self._buffered_frames = 0
        return data

    def _unblock(self) -> None:
        """The writer task took a batch: hand over what waited and let the socket be read again."""
        if self._blocked and not self._queue.full():
            self._blocked = False
            if self._buffer:
                self._queue.put_nowait(self._take())
            if self._pressure is not None:
                self._pressure(False)

    async def _drain(self) -> None:
        while (data := await self._queue.get()) is not None:
            if self._blocked:
                self._unblock()
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
