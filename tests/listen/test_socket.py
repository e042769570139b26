"""The callback-driven listen socket (websockets' sans-I/O client) and the synchronous recording writer."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import time
import tracemalloc
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosedOK, InvalidStatus
from websockets.http11 import Response

from service.listen import writer as writer_module
from service.listen.socket import open_listen_socket
from service.listen.writer import FLUSH_BYTES, QUEUE_BATCHES, RecordingWriter
from service.metrics import Metrics
from service.recordings.storage import StorageError

Handler = Callable[[ServerConnection], Awaitable[None]]


class Collector:
    def __init__(self) -> None:
        self.messages: list[bytes | str] = []

    def on_binary(self, data: bytes | bytearray | memoryview) -> None:
        self.messages.append(bytes(data))

    def on_text(self, text: str) -> None:
        self.messages.append(text)


@asynccontextmanager
async def server(handler: Handler, **kwargs: object) -> AsyncIterator[str]:
    async with serve(handler, "127.0.0.1", 0, **kwargs) as srv:  # type: ignore[arg-type]
        port = next(iter(srv.sockets)).getsockname()[1]
        yield f"ws://127.0.0.1:{port}/call/listen"


async def test_frames_arrive_in_order_with_the_handshake_headers() -> None:
    seen: dict[str, str | None] = {}

    async def handler(ws: ServerConnection) -> None:
        seen["auth"] = ws.request.headers.get("Authorization") if ws.request else None
        seen["agent"] = ws.request.headers.get("User-Agent") if ws.request else None
        await ws.send('{"type": "hello"}')
        for n in range(50):
            await ws.send(bytes([n]) * 1280)
        await ws.send(b"x" * 3000)  # frame sizes are never relied on
        await ws.close()

    async with server(handler) as url:
        socket = await open_listen_socket(url, headers={"Authorization": "Bearer k"}, max_size=1 << 20, timeout=5)
        collector = Collector()
        socket.attach(collector)  # frames that came with the handshake are delivered first
        async with asyncio.timeout(5):
            await socket.closed
    assert seen == {"auth": "Bearer k", "agent": "switchboard"}
    assert collector.messages[0] == '{"type": "hello"}'
    assert collector.messages[1:51] == [bytes([n]) * 1280 for n in range(50)]
    assert collector.messages[51] == b"x" * 3000
    assert isinstance(socket.close_exc, ConnectionClosedOK)


async def test_a_frame_over_max_size_fails_the_connection() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(b"a" * 100)
        await ws.send(b"b" * 5000)
        await asyncio.sleep(1)

    async with server(handler) as url:
        socket = await open_listen_socket(url, headers={}, max_size=4096, timeout=5)
        collector = Collector()
        socket.attach(collector)
        async with asyncio.timeout(5):
            await socket.closed
    assert collector.messages == [b"a" * 100]
    assert not isinstance(socket.close_exc, ConnectionClosedOK)
    assert socket.close_exc.sent is not None
    assert socket.close_exc.sent.code == 1009


async def test_an_http_refusal_is_invalid_status() -> None:
    def refuse(connection: ServerConnection, request: object) -> Response:
        return connection.respond(403, "no\n")

    async def handler(ws: ServerConnection) -> None:
        return None

    async with server(handler, process_request=refuse) as url:
        with pytest.raises(InvalidStatus) as caught:
            await open_listen_socket(url, headers={}, max_size=4096, timeout=5)
    assert caught.value.response.status_code == 403


async def test_closing_from_our_side_and_an_abrupt_drop() -> None:
    async def handler(ws: ServerConnection) -> None:
        while True:
            await ws.send(b"z" * 1280)
            await asyncio.sleep(0.01)

    async with server(handler) as url:
        socket = await open_listen_socket(url, headers={}, max_size=4096, timeout=5)
        socket.attach(Collector())
        await asyncio.sleep(0.1)
        await socket.close()
        assert socket.is_closed
        socket = await open_listen_socket(url, headers={}, max_size=4096, timeout=5)
        socket.attach(Collector())
        socket.abort()
        async with asyncio.timeout(5):
            await socket.closed
        assert not isinstance(socket.close_exc, ConnectionClosedOK)


class SlowSink:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.data = bytearray()

    async def write(self, data: bytes) -> None:
        await self.release.wait()
        self.data += data

    async def close(self) -> None:
        return None


async def test_the_writer_pushes_back_when_storage_is_behind_and_keeps_every_byte() -> None:
    sink = SlowSink()
    pressure: list[bool] = []
    writer = RecordingWriter(sink, metrics=Metrics(), name="t", pressure=pressure.append)
    frames = [bytes([n % 256]) * 1280 for n in range(60 * (QUEUE_BATCHES + 3))]
    for frame in frames:
        writer.append(frame)  # synchronous, as from data_received: the writer task has not run yet
    assert pressure == [True], "a full queue asks the socket to stop reading"
    sink.release.set()
    await writer.close()
    assert pressure[-1] is False, "reading resumes once storage caught up"
    assert bytes(sink.data) == b"".join(frames)
    assert writer.bytes_written == writer.received == len(sink.data)


@pytest.mark.parametrize(("interval", "most_reads", "least_reads"), [(0.2, 5, 1), (0.0, 40, 15)])
async def test_with_a_read_interval_frames_gather_and_arrive_together_in_order(
    interval: float, most_reads: int, least_reads: int
) -> None:
    """Read at most every 0.2 s: 40 frames sent 10 ms apart come in a handful of reads (frames of one
    read are handed over microseconds apart), none lost or reordered; without it, about one per frame."""
    arrivals: list[float] = []

    async def handler(ws: ServerConnection) -> None:
        for n in range(40):
            await ws.send(bytes([n]) * 1280)
            await asyncio.sleep(0.01)
        await ws.close()

    class Timed(Collector):
        def on_binary(self, data: bytes | bytearray | memoryview) -> None:
            arrivals.append(time.perf_counter())
            super().on_binary(data)

    async with server(handler) as url:
        socket = await open_listen_socket(url, headers={}, max_size=1 << 20, timeout=5, read_interval=interval)
        collector = Timed()
        socket.attach(collector)
        async with asyncio.timeout(5):
            await socket.closed
    assert collector.messages == [bytes([n]) * 1280 for n in range(40)]
    reads = 1 + sum(1 for before, after in itertools.pairwise(arrivals) if after - before > 0.004)
    assert least_reads <= reads <= most_reads


async def test_a_closed_socket_lets_go_of_its_handler_so_no_cycle_outlives_the_connection() -> None:
    """The recording writer's backpressure callback refers back to the socket; once the connection is
    lost the socket drops its handler, so an ended session is freed at once, not by the cyclic GC."""

    async def handler(ws: ServerConnection) -> None:
        await ws.send(b"a" * 1280)
        await ws.close()

    class BackReferring(Collector):
        def __init__(self, socket: object) -> None:
            super().__init__()
            self.socket = socket  # like RecordingWriter's pressure callback

    gc.disable()
    try:
        async with server(handler) as url:
            socket = await open_listen_socket(url, headers={}, max_size=4096, timeout=5)
            collector = BackReferring(socket)
            socket.attach(collector)
            async with asyncio.timeout(5):
                await socket.closed
            assert collector.messages == [b"a" * 1280]
            alive = weakref.ref(collector)
            del collector, socket
            assert alive() is None, "only the cyclic garbage collector would free the handler"
    finally:
        gc.enable()


class CountingSink:
    def __init__(self) -> None:
        self.sizes: list[int] = []

    async def write(self, data: bytes) -> None:
        self.sizes.append(len(data))

    async def close(self) -> None:
        return None


async def test_the_writer_holds_no_batch_once_it_is_stored() -> None:
    """Between batches a writer holds only what is gathering: a stored batch is not kept alive (it was,
    by a local of the drain loop waiting for the next one: 48 KiB per live session)."""
    sink = CountingSink()
    writer = RecordingWriter(sink, metrics=Metrics(), name="t")
    await asyncio.sleep(0)  # the writer task starts and waits for a batch
    tracemalloc.start()
    try:
        for n in range(3 * -(-FLUSH_BYTES // 1280)):  # three whole batches: the last one is a full one
            writer.append(bytes([n % 256]) * 1280)
        async with asyncio.timeout(5):
            while sum(sink.sizes) < writer.received:
                await asyncio.sleep(0.01)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sum(sink.sizes) >= 3 * FLUSH_BYTES
    assert held < FLUSH_BYTES // 2, f"{held} bytes still allocated after every batch was stored"
    await writer.close()


class FileLikeSink:
    """A sink whose appends never wait (like a local file): it offers ``write_inline``."""

    def __init__(self, failures: int = 0) -> None:
        self.digest = hashlib.sha256()  # what was stored (kept as a digest: the test measures memory)
        self.writes: list[int] = []
        self.failures = failures  # the first appends that fail (a full disk, then space again)

    def write_inline(self, data: bytes | bytearray | memoryview) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError("no space left on device")
        self.digest.update(data)
        self.writes.append(len(data))

    async def write(self, data: bytes) -> None:
        self.write_inline(data)

    async def close(self) -> None:
        return None


def read_of(writer: RecordingWriter, frames: int, first: int = 0) -> None:
    """What one read of the socket hands over: ``frames`` frames in one callback."""
    for n in range(first, first + frames):
        writer.append(bytes([n % 256]) * 1280)


async def test_an_inline_sink_gets_each_read_as_it_ends_and_nothing_is_held_between_reads() -> None:
    """A sink that never waits is appended to from the gathering buffer once the read's frames are all
    taken: no writer task, no queued copy, and an empty buffer until the next read."""
    sink = FileLikeSink()
    writer = RecordingWriter(sink, metrics=Metrics(), name="t")
    read_of(writer, 10)  # 0.2 s of audio: one read with the default read interval
    assert sink.writes == [], "not while the read is being handed over"
    await asyncio.sleep(0)
    assert sink.writes == [10 * 1280]
    assert writer.received == writer.bytes_written == 10 * 1280
    tracemalloc.start()
    try:
        read_of(writer, 10, first=10)
        await asyncio.sleep(0)
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 2048, f"{held} bytes still allocated once the read was stored"
    read_of(writer, 2, first=20)  # too little to write alone: it waits for more, or for the second
    await asyncio.sleep(0)
    assert sink.writes == [10 * 1280, 10 * 1280]
    assert writer._task is None, "no writer task while every append worked"
    await writer.close()
    expected = hashlib.sha256(b"".join(bytes([n % 256]) * 1280 for n in range(22))).hexdigest()
    assert sink.digest.hexdigest() == writer.sha256 == expected


async def test_a_failed_inline_append_is_retried_through_the_queue_in_order() -> None:
    sink = FileLikeSink(failures=1)
    writer = RecordingWriter(sink, metrics=Metrics(), name="t")
    read_of(writer, 10)
    await asyncio.sleep(0)
    assert writer._task is not None, "the batch that failed went to the writer task"
    read_of(writer, 10, first=10)  # queued behind it, not appended ahead of it
    await asyncio.sleep(0)
    async with asyncio.timeout(5):
        while writer.bytes_written < 20 * 1280:
            await asyncio.sleep(0.01)
    read_of(writer, 10, first=20)  # caught up: inline again
    await asyncio.sleep(0)
    assert writer.bytes_written == 30 * 1280
    await writer.close()
    expected = hashlib.sha256(b"".join(bytes([n % 256]) * 1280 for n in range(30))).hexdigest()
    assert sink.digest.hexdigest() == writer.sha256 == expected
    assert writer.error is None


class OutageSink:
    """Object storage that is unreachable until ``failing`` is cleared."""

    def __init__(self) -> None:
        self.failing = True
        self.data = bytearray()

    async def write(self, data: bytes) -> None:
        if self.failing:
            raise StorageError("bucket unreachable")
        self.data += data

    async def close(self) -> None:
        return None


async def test_closing_during_an_outage_tries_storage_once_more_before_giving_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The outage's backoff put the next try 5 s away; storage is back and the call ends: the writer's
    last wait (CLOSE_RETRY_SECONDS) tries once more instead of sleeping to its end and dropping the audio."""
    monkeypatch.setattr(writer_module, "OUTAGE_RETRY_SECONDS", (0.05, 5.0))
    monkeypatch.setattr(writer_module, "CLOSE_RETRY_SECONDS", 0.5)
    sink = OutageSink()
    writer = RecordingWriter(sink, metrics=Metrics(), name="t")
    frames = [bytes([n]) * 640 for n in range(100)]
    async with asyncio.timeout(10):
        for frame in frames:
            writer.append(frame)
            await asyncio.sleep(0.005)
        while writer.bytes_written == 0 and writer._failures < 2:  # the next try is 5 s away
            await asyncio.sleep(0.01)
        sink.failing = False
        await writer.close()
    assert bytes(sink.data) == b"".join(frames)
    assert writer.error is None


async def test_frames_that_came_before_the_handler_are_delivered_even_if_the_socket_closed() -> None:
    """While the session opens its segment, frames wait in the socket; a call that ends (a normal close)
    before the handler is attached must not take them along."""

    async def handler(ws: ServerConnection) -> None:
        for n in range(50):
            await ws.send(bytes([n]) * 640)
        await ws.send('{"type": "transcript", "text": "bye"}')
        await ws.close()

    async with server(handler) as url:
        socket = await open_listen_socket(url, headers={}, max_size=1 << 20, timeout=5)
        await asyncio.wait_for(asyncio.shield(socket.closed), 5)
        collector = Collector()
        socket.attach(collector)
    assert collector.messages == [bytes([n]) * 640 for n in range(50)] + ['{"type": "transcript", "text": "bye"}']
