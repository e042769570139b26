"""Recording storage: the same behaviour from local files, obstore's memory store and S3 (moto)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncGenerator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import obstore
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.recordings.storage import (
    S3_RETRY,
    LocalStorage,
    ObjectStorage,
    RecordingStorage,
    StorageError,
    build_storage,
    inline_writer,
)
from service.recordings.watch import WatchedStorage
from service.settings import ConfigurationError
from tests.recordings.conftest import S3_BUCKET, S3_SECRET, s3_environment
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]


async def read_all(storage: RecordingStorage, key: str, start: int = 0, end: int = 1 << 40) -> bytes:
    return b"".join([chunk async for chunk in storage.read(key, start, end)])


async def store(storage: RecordingStorage, key: str, *writes: bytes) -> None:
    writer = await storage.open_writer(key)
    try:
        for data in writes:
            await writer.write(data)
    finally:
        await writer.close()


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(writes=st.lists(st.binary(max_size=300), max_size=6), data=st.data())
async def test_any_range_reads_back_the_same_slice(
    storage: RecordingStorage, writes: list[bytes], data: st.DataObject
) -> None:
    key = f"{uuid.uuid4().hex}/0001.pcm"
    await store(storage, key, *writes)
    whole = b"".join(writes)
    assert await storage.size(key) == len(whole)
    start = data.draw(st.integers(0, len(whole) + 5), label="start")
    end = data.draw(st.integers(start, len(whole) + 10), label="end")
    assert await read_all(storage, key, start, end) == whole[start:end]


async def test_a_reopened_writer_continues_the_segment(storage: RecordingStorage) -> None:
    await store(storage, "call/0001.pcm", b"first ", b"second ")
    await store(storage, "call/0001.pcm", b"after a restart")
    assert await read_all(storage, "call/0001.pcm") == b"first second after a restart"
    assert await storage.size("call/0001.pcm") == 28


async def test_local_writers_append_inline_and_a_failing_one_shows_in_readiness(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Local files offer the synchronous append the recording writer uses (through the readiness
    watch too); object storage, whose writes wait for a PUT, does not."""
    watched = WatchedStorage(LocalStorage(tmp_path))
    writer = await watched.open_writer("call/0001.pcm")
    write = inline_writer(writer)
    assert write is not None
    write(b"first ")
    write(memoryview(b"second"))

    def full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StorageError):
        write(b"lost")
    with pytest.raises(StorageError, match="1 recording writer"):
        await watched.check()
    monkeypatch.undo()
    write(b" third")
    await watched.check()
    await writer.close()
    assert await read_all(watched, "call/0001.pcm") == b"first second third"
    objects = ObjectStorage(obstore.store.MemoryStore())
    try:
        assert inline_writer(await objects.open_writer("call/0001.pcm")) is None
    finally:
        await objects.close()


async def test_chunk_objects_are_numbered_in_name_order() -> None:
    storage = ObjectStorage(obstore.store.MemoryStore())
    try:
        await store(storage, "call/0001.pcm", *[bytes([n]) * 3 for n in range(11)], b"")
        await store(storage, "call/0001.pcm", b"z")
        names = [meta["path"] for page in obstore.list(storage.store) for meta in page]
        assert sorted(names) == [f"call/0001.pcm/{n:08d}" for n in range(12)]  # the empty write stored nothing
        assert await read_all(storage, "call/0001.pcm", 31, 34) == b"\x0a\x0az"
    finally:
        await storage.close()


async def test_missing_keys_are_empty(storage: RecordingStorage) -> None:
    assert await storage.size("nobody/0001.pcm") == 0
    assert await read_all(storage, "nobody/0001.pcm") == b""


async def test_keys_sharing_a_name_prefix_stay_apart(storage: RecordingStorage) -> None:
    await store(storage, "call/1", b"one")
    await store(storage, "call/10", b"ten")
    await store(storage, "call1/1", b"other call")
    assert (await read_all(storage, "call/1"), await storage.size("call/1")) == (b"one", 3)
    assert await read_all(storage, "call/10") == b"ten"


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/", "a/../b", "./a"])
async def test_malformed_keys_are_refused(storage: RecordingStorage, key: str) -> None:
    """An empty key would address every segment at once; such keys are programming errors."""
    with pytest.raises(ValueError, match="invalid storage key"):
        await storage.size(key)
    with pytest.raises(ValueError, match="invalid storage key"):
        await storage.open_writer(key)


async def test_reads_while_writing_see_a_prefix_of_the_segment(storage: RecordingStorage) -> None:
    key = "live/0001.pcm"
    pieces = [bytes([n]) * 512 for n in range(30)]
    whole = b"".join(pieces)
    writer = await storage.open_writer(key)
    seen: list[bytes] = []

    async def write() -> None:
        for piece in pieces:
            await writer.write(piece)
            await asyncio.sleep(0)

    async def read() -> None:
        while len(seen) < 200 and (not seen or len(seen[-1]) < len(whole)):
            seen.append(await read_all(storage, key, 0, len(whole)))

    await asyncio.gather(write(), read(), read())
    await writer.close()
    assert all(whole.startswith(snapshot) for snapshot in seen)
    assert await read_all(storage, key) == whole


async def test_a_download_may_stop_early() -> None:
    storage = build_storage("memory://")
    try:
        await store(storage, "a/1.pcm", *[b"x" * 100] * 10)
        reader = storage.read("a/1.pcm", 0, 1000)
        assert await anext(reader) == b"x" * 100
        assert isinstance(reader, AsyncGenerator)
        await reader.aclose()  # the chunks fetched ahead are dropped, nothing leaks
        assert await storage.size("a/1.pcm") == 1000
    finally:
        await storage.close()


async def test_a_closed_object_storage_refuses_work() -> None:
    storage = build_storage("memory://")
    writer = await storage.open_writer("a/1.pcm")
    await storage.close()
    await storage.close()
    with pytest.raises(StorageError, match="storage is closed"):
        await writer.write(b"late")


def test_build_storage_by_scheme(tmp_path: Path, s3_env: dict[str, str]) -> None:
    assert isinstance(build_storage(f"file://{tmp_path}"), LocalStorage)
    assert isinstance(build_storage("memory://"), ObjectStorage)
    assert isinstance(build_storage("s3://bucket/prefix"), ObjectStorage)
    with pytest.raises(ConfigurationError, match="names no bucket"):
        build_storage("s3:///prefix")
    with pytest.raises(ConfigurationError, match=r"unknown storage scheme 'ftp'.*s3://BUCKET/PREFIX"):
        build_storage("ftp://host/recordings")


async def test_local_check_fails_on_an_unwritable_root(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    with pytest.raises(StorageError, match="cannot be created"):
        await LocalStorage(blocker / "recordings").check()


# --- S3: configuration from the environment, readiness, retries -------------------------------------


async def test_s3_from_environment_end_to_end(s3_env: dict[str, str], moto_endpoint: str) -> None:
    prefix = uuid.uuid4().hex
    storage = build_storage(f"s3://{S3_BUCKET}/{prefix}/recordings")
    try:
        await storage.check()
        await store(storage, "call/0001.pcm", b"hello ", b"world")
        assert await read_all(storage, "call/0001.pcm", 3, 9) == b"lo wor"
    finally:
        await storage.close()
    # The objects really are where the URL says, as plain chunk objects.
    plain = obstore.store.S3Store(
        S3_BUCKET, endpoint=moto_endpoint, client_options={"allow_http": True}, skip_signature=True
    )
    names = [meta["path"] for page in obstore.list(plain, prefix=prefix) for meta in page]
    assert sorted(names) == [f"{prefix}/recordings/call/0001.pcm/0000000{n}" for n in (0, 1)]


async def test_s3_check_fails_clearly_when_the_endpoint_is_down(
    s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    storage = build_storage(f"s3://{S3_BUCKET}/down")
    try:
        started = time.monotonic()
        with pytest.raises(StorageError, match="check failed: GenericError") as caught:
            await storage.check()
        assert time.monotonic() - started < 10  # bounded retries, not obstore's three-minute default
        assert S3_SECRET not in str(caught.value)
        assert "\n" not in str(caught.value)
    finally:
        await storage.close()


async def test_s3_check_fails_for_a_missing_bucket(s3_env: dict[str, str]) -> None:
    storage = build_storage("s3://no-such-bucket/prefix")
    try:
        with pytest.raises(StorageError, match=r"NoSuchBucket|404"):
            await storage.check()
    finally:
        await storage.close()


LIST_NOTHING = (
    '<?xml version="1.0" encoding="UTF-8"?><ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    "<Name>switchboard-test</Name><KeyCount>0</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>"
    "</ListBucketResult>"
)


class _FlakyS3(BaseHTTPRequestHandler):
    """Answers the first ``failures`` PUTs with 503, then accepts them (as S3 does, with an ETag)."""

    failures = 0
    puts: list[str]

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.puts.append(self.path)
        status = 503 if len(self.puts) <= self.failures else 200
        self.send_response(status)
        self.send_header("ETag", '"etag"')
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        body = LIST_NOTHING.encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def flaky_s3(s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[type[_FlakyS3]]:
    handler = type("Handler", (_FlakyS3,), {"puts": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        yield handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_s3_write_retries_transient_failures(flaky_s3: type[_FlakyS3]) -> None:
    flaky_s3.failures = 2
    storage = build_storage(f"s3://{S3_BUCKET}/p")
    try:
        writer = await storage.open_writer("call/1.pcm")
        await writer.write(b"audio")
    finally:
        await storage.close()
    assert flaky_s3.puts == ["/switchboard-test/p/call/1.pcm/00000000"] * 3


async def test_s3_write_gives_up_after_bounded_retries(flaky_s3: type[_FlakyS3]) -> None:
    flaky_s3.failures = 1000
    storage = build_storage(f"s3://{S3_BUCKET}/p")
    try:
        writer = await storage.open_writer("call/1.pcm")
        for _ in range(2):  # the caller's retry of a failed write targets the same chunk
            with pytest.raises(StorageError, match=r"write call/1.pcm/00000000 failed: GenericError"):
                await writer.write(b"audio")
    finally:
        await storage.close()
    assert len(flaky_s3.puts) == 2 * (1 + S3_RETRY["max_retries"])
    assert set(flaky_s3.puts) == {"/switchboard-test/p/call/1.pcm/00000000"}


# --- obstore's exit-time abort: the storage never triggers it ----------------------------------------

EXIT_SCRIPT = """
import asyncio, sys
from service.recordings.storage import build_storage

async def main(url: str) -> None:
    storage = build_storage(url)
    writer = await storage.open_writer("call/0001.pcm")
    for n in range(4):
        await writer.write(bytes([n]) * 65536)
    assert await storage.size("call/0001.pcm") == 4 * 65536
    assert len(b"".join([c async for c in storage.read("call/0001.pcm", 1000, 200000)])) == 199000
    await storage.check()
    if sys.argv[2] == "close":
        await storage.close()

asyncio.run(main(sys.argv[1]))
"""


@pytest.mark.slow
def test_storage_code_exits_cleanly_every_time(moto_endpoint: str) -> None:
    """obstore 0.12.1's async API aborts at interpreter exit about 1 run in 30 (exit 134, more with
    get_range on S3); ObjectStorage uses the synchronous API in its own threads. 30 processes, each
    writing, sizing and range-reading on memory or S3, closed or not, must all exit with 0."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    environment |= s3_environment(moto_endpoint) | {"PYTHONPATH": str(ROOT)}
    runs = [
        ("memory://" if n % 2 else f"s3://{S3_BUCKET}/exit-{uuid.uuid4().hex}", "close" if n % 4 < 2 else "no-close")
        for n in range(30)
    ]
    codes: list[int] = []
    for batch in range(0, len(runs), 4):
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", EXIT_SCRIPT, url, mode],
                env=environment,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for url, mode in runs[batch : batch + 4]
        ]
        for process in processes:
            _, stderr = process.communicate(timeout=60)
            codes.append(process.returncode)
            assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
    assert codes == [0] * 30
