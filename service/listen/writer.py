"""Batched, checksummed appends of one connection's audio to storage, off the receive path.

Frames are gathered in memory for at most a second (or 16 KiB), then handed through a bounded queue to
a writer task. Taking a frame is synchronous (no task switch per frame); when storage is
``QUEUE_BATCHES`` batches behind, the writer asks its caller to stop reading the socket until it catches
up (backpressure reaches the socket, memory stays bounded).

A storage whose appends never wait (local files: ``write_inline``, see
:class:`~service.recordings.storage.SegmentWriter`) is appended to straight from the gathering buffer,
at the end of each read of the socket (what one read brought, once it is at least
:data:`INLINE_MIN_BYTES`) or when a batch fills, while storage works and nothing waits in the queue: no
copy of the batch, no task switch, no batches queued behind a busy event loop, and nothing held between
reads. Through a queue, every session held the batches its last read produced until its writer task's
turn came: when the loop was busiest (a burst of calls placed or ending together), megabytes across the
process, kept by the allocator afterwards; and the gathering buffer, half a batch on average, was most
of what a live session held. The queue and its task are made only if an inline append fails: that
batch, and the ones after it, then go through the queue and its retries like any other.

Storage faults (a full disk, an unreachable bucket) are outages, not the end of the recording: a failed
write is retried briefly, then with backoff for as long as the call lasts. Meanwhile the queue keeps
being drained into a pending buffer of at most :data:`MAX_PENDING_BYTES`; beyond that the oldest audio
is dropped, so what is lost is one stretch right after the last stored byte. When storage takes a
write again, that stretch becomes a gap: the caller's ``split`` closes the segment and opens the next
one with the gap before it, and the pending audio goes there. Only what is still pending when the
call ends and storage is still failing (after :data:`CLOSE_RETRY_SECONDS`) is lost for good
(``error``). Readiness learns of the fault from the storage (``service.recordings.watch``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import deque
from collections.abc import Awaitable, Callable

import structlog

from service.metrics import Metrics
from service.recordings.storage import SegmentWriter, StorageError, inline_writer

log = structlog.get_logger(__name__)

# 0.256 s of 16 kHz stereo, about two of the listen socket's reads (0.2 s each by default): what a session
# holds in memory while it gathers (on average half of it; it was 48 KiB, most of a session's memory),
# and with the audio still in the kernel (one read interval) what a kill -9 loses, well under a second.
# A batch every two reads instead of four: ~2.5 writes per second per call.
FLUSH_BYTES = 16 * 1024
FLUSH_SECONDS = 1.0  # so that a kill -9 loses at most about a second
QUEUE_BATCHES = 8
INLINE_MIN_BYTES = 4 * 1024  # a read bringing less (no read interval: a frame per read) waits for more
WRITE_ATTEMPTS = 3
RETRY_DELAYS = (0.2, 1.0)
MAX_PENDING_BYTES = 4 * 1024 * 1024  # ~65 s of 16 kHz stereo held while storage fails
OUTAGE_RETRY_SECONDS = (0.5, 1.0, 2.0, 5.0)  # then every 5 s
CLOSE_RETRY_SECONDS = 3.0  # how long the end of a call waits for storage to come back
# split(dropped bytes, bytes stored in the segment, their sha256, the first batch after the gap) -> the
# writer of the next segment, which holds that batch; StorageOutage while storage still fails.
Split = Callable[[int, int, str, bytes], Awaitable[SegmentWriter]]


class StorageOutage(Exception):
    """Storage still refuses writes (retry later); any other error from a split is final."""


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
        split: Split | None = None,
        notify: Callable[[str, dict[str, object]], None] | None = None,
    ) -> None:
        self._sink = sink
        self._inline = inline_writer(sink)
        self._split = split
        self._notify = notify  # timeline events: listen.storage_failed / listen.storage_resumed
        self._pending: deque[bytes] = deque()
        self._pending_bytes = 0
        self._failures = 0  # consecutive failed attempts; 0 while storage works
        self._broken = False  # a gap could not be recorded: audio is counted, no longer stored
        self._retry_at = 0.0
        self.dropped_bytes = 0  # lost since the last stored byte, not yet marked as a gap
        self._dropped_in_outage = 0
        self._metrics = metrics
        self._pressure = pressure
        self._blocked = False
        self._buffer = bytearray()
        self._buffered_frames = 0
        self._digest = hashlib.sha256()
        self._last_flush = time.monotonic()
        self._name = name
        self._queue: asyncio.Queue[bytes | None] | None = None
        self._task: asyncio.Task[None] | None = None
        if self._inline is None:
            self._start_task()
        self.frames = 0
        self.bytes_received = 0
        self.bytes_written = 0
        self.error: str | None = None
        self._last_error = ""

    def _start_task(self) -> asyncio.Queue[bytes | None]:
        """The writer task and its queue: from the start for a sink that may have to wait, otherwise
        from the first batch that could not be appended inline."""
        if self._queue is None:
            self._queue = asyncio.Queue(QUEUE_BATCHES)
            self._task = asyncio.create_task(self._drain(), name=f"writer:{self._name}")
        return self._queue

    def append(self, frame: bytes | bytearray | memoryview) -> None:
        """Take one frame; hand a batch to the writer task when a second or ``FLUSH_BYTES`` has gathered."""
        buffer = self._buffer
        if not buffer and self._inline is not None:
            # Runs once the frames of this read are all taken (the socket hands them over in one callback).
            asyncio.get_running_loop().call_soon(self._read_taken)
        buffer += frame
        self._buffered_frames += 1
        if len(buffer) >= FLUSH_BYTES or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush_nowait()

    @property
    def received(self) -> int:
        """Bytes taken so far, handed over or still gathering."""
        return self.bytes_received + len(self._buffer)

    def _read_taken(self) -> None:
        if len(self._buffer) >= INLINE_MIN_BYTES:
            self.flush_nowait()

    def flush_if_due(self) -> None:
        """Called every second by the session, so that sparse audio is not held back."""
        if self._buffer and time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush_nowait()

    def flush_nowait(self) -> None:
        """Hand what gathered to the writer task, unless its queue is full (then keep it: backpressure)."""
        self._last_flush = time.monotonic()
        if not self._buffer or self._write_inline():
            return
        queue = self._start_task()
        if queue.full():
            if not self._blocked:
                self._blocked = True
                if self._pressure is not None:
                    self._pressure(True)
            return
        queue.put_nowait(self._take())

    async def flush(self) -> None:
        """Hand over what gathered, waiting for room in the queue if storage is behind."""
        self._last_flush = time.monotonic()
        if self._buffer and not self._write_inline():
            await self._start_task().put(self._take())

    def _write_inline(self) -> bool:
        """Append what gathered straight from the buffer, if the sink can and nothing is ahead of it in
        the queue or waiting out a failure (order is kept); False: hand it to the writer task instead."""
        write = self._inline
        queue = self._queue
        if write is None or self._failures or self._pending or self._broken or (queue and not queue.empty()):
            return False
        buffer = self._buffer
        started = time.perf_counter()
        try:
            write(buffer)
        except Exception:
            self._metrics.storage_write_errors.inc()
            return False  # the writer task retries it, as any failed batch
        self._metrics.storage_write_seconds.observe(time.perf_counter() - started)
        self._digest.update(buffer)
        self.bytes_written += len(buffer)
        self._counted(len(buffer))
        buffer.clear()
        return True

    def _take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        self._counted(len(data))
        return data

    def _counted(self, size: int) -> None:
        """A batch of ``size`` bytes left the gathering buffer."""
        self.frames += self._buffered_frames
        self.bytes_received += size
        self._metrics.listen_frames.inc(self._buffered_frames)
        self._metrics.listen_bytes.inc(size)
        self._buffered_frames = 0

    def _unblock(self) -> None:
        """The writer task took a batch: hand over what waited and let the socket be read again."""
        queue = self._queue
        assert queue is not None  # called by the writer task, which has its queue
        if self._blocked and not queue.full():
            self._blocked = False
            if self._buffer:
                queue.put_nowait(self._take())
            if self._pressure is not None:
                self._pressure(False)

    async def _drain(self) -> None:
        ending_at: float | None = None  # set when close() asked: how long storage may still take
        while ending_at is None or self._pending:
            if ending_at is None:
                if not await self._receive():
                    ending_at = time.monotonic() + CLOSE_RETRY_SECONDS
                    # One more try within the wait, however far the outage's backoff put the next.
                    self._retry_at = min(self._retry_at, ending_at)
            elif self._failures:
                if time.monotonic() >= ending_at:
                    self._give_up()
                    return
                await asyncio.sleep(min(max(0.0, self._retry_at - time.monotonic()), ending_at - time.monotonic()))
            if self._pending and time.monotonic() >= self._retry_at:
                await self._store_pending()

    async def _receive(self) -> bool:
        """Hold the next batch for storage; False once close() asked.

        A helper rather than a local of ``_drain``: a local would keep the last batch alive,
        for every session, while the loop waits for the next one."""
        data = await self._next_batch()
        if data is None:
            return False
        if data and not self._broken:
            self._hold(data)
        return True

    async def _next_batch(self) -> bytes | None:
        """The next batch (None: close asked); b"" when a retry is due before one arrives."""
        queue = self._queue
        assert queue is not None  # the writer task runs with its queue
        if not self._failures:  # the common case, a few times a second per call: no timeout to arm
            data = await queue.get()
        else:
            try:
                async with asyncio.timeout(max(0.0, self._retry_at - time.monotonic())):
                    data = await queue.get()
            except TimeoutError:
                return b""
        if self._blocked:
            self._unblock()
        return data

    def _hold(self, data: bytes) -> None:
        """Queue ``data`` for storage; while storage fails, drop the oldest beyond the bound."""
        self._pending.append(data)
        self._pending_bytes += len(data)
        while self._pending_bytes > MAX_PENDING_BYTES and len(self._pending) > 1:
            dropped = self._pending.popleft()
            self._pending_bytes -= len(dropped)
            self.dropped_bytes += len(dropped)
            self._dropped_in_outage += len(dropped)

    async def _store_pending(self) -> None:
        try:
            if self.dropped_bytes:
                await self._start_after_gap()
            while self._pending:
                data = self._pending[0]
                await self._write(data, attempts=1 if self._failures else WRITE_ATTEMPTS)
                self._pending.popleft()
                self._pending_bytes -= len(data)
                self._digest.update(data)
                self.bytes_written += len(data)
        except (StorageOutage, StorageError, OSError) as exc:  # an outage to wait out, never the call's end
            self._failed(exc)
            return
        except Exception as exc:  # the gap could not be recorded: stop storing rather than lie about it
            self._give_up(f"storage resumed but the gap could not be recorded: {type(exc).__name__}")
            self._broken = True
            return
        if self._failures:
            log.warning("recording storage works again", failures=self._failures)
            if self._notify is not None:
                self._notify("listen.storage_resumed", {"droppedBytes": self._dropped_in_outage})
            self._failures = self._dropped_in_outage = 0

    async def _start_after_gap(self) -> None:
        """Storage may be back after dropping audio: continue in a new segment behind a gap. The split
        writes the first pending batch to the new segment before recording anything, so an outage
        that goes on makes no empty segments."""
        if self._split is None:  # nobody to record the gap with: the loss ends up in ``error``
            self.error = self.error or f"storage failed; {self.dropped_bytes} bytes of audio were dropped"
            self.dropped_bytes = 0
            return
        first = self._pending[0]
        sink = await self._split(self.dropped_bytes, self.bytes_written, self.sha256, first)
        with contextlib.suppress(Exception):
            await self._sink.close()
        self._sink, self._digest, self.bytes_written, self.dropped_bytes = sink, hashlib.sha256(first), len(first), 0
        self._inline = inline_writer(sink)
        self._pending.popleft()
        self._pending_bytes -= len(first)

    def _failed(self, exc: Exception) -> None:
        reason = f"storage write failed: {type(exc).__name__}: {exc}"[:500]
        if not self._failures:
            log.error("recording storage failed; holding audio and retrying", error=reason)
            if self._notify is not None:
                self._notify("listen.storage_failed", {"error": reason})
        delay = OUTAGE_RETRY_SECONDS[min(self._failures, len(OUTAGE_RETRY_SECONDS) - 1)]
        self._failures += 1
        self._retry_at = time.monotonic() + delay
        self._last_error = reason

    def _give_up(self, reason: str | None = None) -> None:
        """The call ended and storage is still failing (or the gap cannot be recorded): what is
        pending is lost."""
        lost = self._pending_bytes + self.dropped_bytes
        self._pending.clear()
        self._pending_bytes = self.dropped_bytes = 0
        self.error = f"{reason or self._last_error} ({lost} bytes of audio not stored)"
        log.error("recording storage still failing at the end of the call", error=self.error)

    async def _write(self, data: bytes, *, attempts: int = WRITE_ATTEMPTS) -> None:
        for attempt in range(attempts):
            started = time.perf_counter()
            try:
                await self._sink.write(data)
            except Exception:
                self._metrics.storage_write_errors.inc()
                if attempt == attempts - 1:
                    raise
                await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
            else:
                self._metrics.storage_write_seconds.observe(time.perf_counter() - started)
                return

    async def close(self) -> None:
        """Flush what is buffered, wait for every queued batch, close the sink."""
        try:
            await self.flush()
            if self._queue is not None:
                await self._queue.put(None)
            if self._task is not None:
                await self._task
        finally:
            if self._task is not None and not self._task.done():
                self._task.cancel()
                await asyncio.gather(self._task, return_exceptions=True)
            await self._sink.close()

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()
