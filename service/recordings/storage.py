"""Where recording segments live: local files (the default), an object store (S3 or any S3-compatible
store, through obstore), or memory (tests; the same object-store code over obstore's MemoryStore).

A segment is written once, front to back, by one writer (the listen session that owns the call's lease),
and read by any number of downloads, also while it is still being written.

Keys are relative paths such as ``{call_id}/0001.pcm``: non-empty, ``/``-separated, no empty, ``.`` or
``..`` part (an empty key would otherwise address the whole store). A missing key has size 0 and reads
as nothing. Every storage failure surfaces as `StorageError`; a bad key is a programming error
(`ValueError`).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import functools
import io
import os
import re
import shutil
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, ParamSpec, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import BaseError as ObstoreError
from obstore.store import MemoryStore, S3Store

from service.settings import ConfigurationError

if TYPE_CHECKING:
    from obstore.store import ObjectStore, RetryConfig

T = TypeVar("T")
P = ParamSpec("P")

READ_CHUNK_BYTES = 256 * 1024
CHUNK_DIGITS = 8  # zero-padded so that names sort like numbers: 10**8 one-second chunks is three years
STORAGE_THREADS = 16
READ_AHEAD_CHUNKS = 4
READ_FILE_BUFFER_BYTES = 1024 * 1024  # chunk GETs in flight per download: bounded memory, no per-chunk round-trip stall

# obstore retries 5xx, connection errors and timeouts itself, with backoff and jitter. Its defaults
# (10 retries, up to 3 minutes) would stall a listen session's write for minutes; bounded here instead,
# and the caller (RecordingWriter) retries a failed write() a few more times.
S3_RETRY: RetryConfig = {
    "max_retries": 3,
    "retry_timeout": timedelta(seconds=10),
    "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=1), "base": 2},
}


class StorageError(Exception):
    """A storage operation failed (store unreachable, denied, closed…); retrying may help.

    The message names the operation and the key and never carries credentials; the library's own
    exception is chained as ``__cause__`` for logs.
    """


class SegmentWriter(Protocol):
    """Appends to one segment. A writer whose appends never have to wait (a local file: one write into
    the page cache) may also offer ``write_inline(data)``, the same append done synchronously, and the
    recording writer then appends each batch from its own buffer as it fills (see
    :class:`service.listen.writer.RecordingWriter`); writers without it are written to by a task."""

    async def write(self, data: bytes) -> None:
        """Append ``data`` durably enough to survive the process being killed."""

    async def close(self) -> None: ...


def inline_writer(writer: SegmentWriter) -> Callable[[bytes | bytearray | memoryview], None] | None:
    """``writer``'s synchronous append (``write_inline``), or None when its appends may have to wait."""
    write: Callable[[bytes | bytearray | memoryview], None] | None = getattr(writer, "write_inline", None)
    return write


@runtime_checkable
class RecordingStorage(Protocol):
    async def open_writer(self, key: str) -> SegmentWriter:
        """Open ``key`` for appending (created if missing; existing bytes are kept)."""

    async def size(self, key: str) -> int:
        """Bytes stored under ``key`` (0 when missing)."""

    def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Stream bytes ``[start, end)`` of ``key`` (clipped to what is stored; nothing when missing)."""

    async def check(self) -> None:
        """Raise `StorageError` when the storage is not usable (readiness)."""

    def open_file(self, key: str) -> BinaryIO:
        """``key`` as a seekable, *blocking* file (for libraries that read files: the FLAC decoder).

        Call it, and use the file, from a worker thread, never from the event loop.
        """

    async def keys(self, prefix: str) -> list[str]:
        """The stored objects under the folder ``prefix`` (a call id), sorted: what erasure must remove."""

    async def delete(self, key: str) -> None:
        """Remove ``key`` (a segment or an archive); a missing key is not an error."""

    async def delete_prefix(self, prefix: str) -> int:
        """Remove everything under the folder ``prefix`` (a call id); how many objects were removed."""

    async def close(self) -> None: ...


MAX_KEY_PART_BYTES = 255  # a file name's limit on every common file system


def _check_key(key: str) -> str:
    parts = key.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid storage key {key!r}: use non-empty '/'-separated parts, no '.' or '..'")
    if any(len(part.encode()) > MAX_KEY_PART_BYTES for part in parts):
        raise ValueError(f"invalid storage key {key[:80]!r}…: a part is longer than {MAX_KEY_PART_BYTES} bytes")
    return key


class _FileWriter:
    def __init__(self, path: Path) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
            self._size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise StorageError(f"cannot open {path} for writing: {exc.strerror}") from exc

    async def write(self, data: bytes) -> None:
        self.write_inline(data)

    def write_inline(self, data: bytes | bytearray | memoryview) -> None:
        # Writes are batched by the caller (16 KiB of audio, or a second), so a few writes into the page
        # cache per second per call: cheap enough for the event loop, and it survives kill -9.
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except OSError as exc:
            # All or nothing: a disk that filled up mid-batch must not leave half of it, or the
            # caller's retry of the whole batch would store its first part twice.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self._size)
            raise StorageError(f"write failed: {exc.strerror}") from exc
        self._size += len(data)

    async def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class LocalStorage:
    """Segments as plain append-only files under a root folder: the embedded default, and the fastest."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._resolved_root: Path | None = None  # the root with symlinks resolved, once it is used

    def _path(self, key: str) -> Path:
        if self._resolved_root is None:
            self._resolved_root = self.root.resolve()
        path = (self.root / _check_key(key)).resolve()
        if not path.is_relative_to(self._resolved_root):  # a symlink inside the root may point out
            raise ValueError(f"storage key escapes the storage root: {key!r}")
        return path

    async def open_writer(self, key: str) -> SegmentWriter:
        return _FileWriter(self._path(key))

    async def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            return 0

    async def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        try:
            handle = self._path(key).open("rb")
        except FileNotFoundError:
            return
        with handle:
            handle.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(READ_CHUNK_BYTES, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk

    def open_file(self, key: str) -> BinaryIO:
        try:
            return self._path(key).open("rb")
        except OSError as exc:
            raise StorageError(f"cannot open {key}: {exc.strerror}") from exc

    async def keys(self, prefix: str) -> list[str]:
        folder = self._path(prefix)
        root = self._resolved_root or self.root.resolve()
        return sorted(str(path.relative_to(root)) for path in folder.rglob("*") if path.is_file())

    async def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"delete {key} failed: {exc.strerror}") from exc

    async def delete_prefix(self, prefix: str) -> int:
        folder = self._path(prefix)
        if folder == (self._resolved_root or self.root.resolve()):
            raise ValueError("refusing to delete the whole storage root")
        count = len(await self.keys(prefix))
        try:
            await asyncio.to_thread(shutil.rmtree, folder)
        except FileNotFoundError:
            return 0
        except OSError as exc:
            raise StorageError(f"delete {prefix}/ failed: {exc.strerror}") from exc
        return count

    async def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"recordings folder {self.root} cannot be created: {exc.strerror}") from exc
        if not os.access(self.root, os.W_OK):
            raise StorageError(f"recordings folder {self.root} is not writable")

    async def close(self) -> None:
        return None


_CHUNK_NAME = re.compile(rf"\d{{{CHUNK_DIGITS}}}")
_USERINFO = re.compile(r"//[^/@\s]*@")


def _describe(exc: Exception) -> str:
    """The first line of a library error, without any ``user:password@`` an endpoint URL might carry."""
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {_USERINFO.sub('//', first_line)[:300]}"


def _chunk_list(store: ObjectStore, key: str) -> list[tuple[str, int]]:
    # list_with_delimiter lists one level: the chunks of ``key``, not those of a nested ``key/x``.
    listing = obstore.list_with_delimiter(store, key)
    chunks = [
        (meta["path"], meta["size"])
        for meta in listing["objects"]
        if _CHUNK_NAME.fullmatch(meta["path"].rpartition("/")[2])
    ]
    return sorted(chunks)


def _all_under(store: ObjectStore, prefix: str) -> list[str]:
    # A prefix matches whole path parts: "call-1" lists "call-1/…", never "call-10/…".
    return sorted(meta["path"] for batch in obstore.list(store, prefix, chunk_size=1000) for meta in batch)


def _delete_all(store: ObjectStore, paths: list[str]) -> None:
    # S3 deletes up to 1000 objects a request (DeleteObjects); obstore batches them itself.
    if paths:
        obstore.delete(store, paths)


def _get_range(store: ObjectStore, path: str, start: int, end: int) -> bytes:
    return bytes(obstore.get_range(store, path, start=start, end=end))


def _probe(store: ObjectStore) -> None:
    # One LIST page under the store's prefix: fails when the endpoint is down, the bucket is missing
    # or the credentials are refused.
    next(iter(obstore.list(store, chunk_size=1)), None)


class _ChunkedFile(io.RawIOBase):
    """A segment's chunk objects as one seekable, blocking file: each read is one ranged GET."""

    def __init__(self, store: ObjectStore, chunks: list[tuple[str, int]]) -> None:
        self._store = store
        self._paths = [path for path, _ in chunks]
        self._starts = [0]
        for _, size in chunks:
            self._starts.append(self._starts[-1] + size)
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._starts[-1]}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._position >= self._starts[-1] or not len(buffer):
            return 0
        index = bisect.bisect_right(self._starts, self._position) - 1
        low = self._position - self._starts[index]
        high = min(self._starts[index + 1] - self._starts[index], low + len(buffer))
        try:
            data = _get_range(self._store, self._paths[index], low, high)
        except ObstoreError as exc:
            raise OSError(f"read {self._paths[index]} failed: {_describe(exc)}") from exc
        buffer[: len(data)] = data
        self._position += len(data)
        return len(data)


class _ChunkWriter:
    """Appends to a segment by PUTting the next numbered chunk object.

    The chunk number only advances after a successful PUT, so retrying a failed ``write()`` rewrites
    the same chunk: a PUT that succeeded but whose answer was lost is overwritten with the same bytes.
    """

    def __init__(self, storage: ObjectStorage, key: str, next_index: int) -> None:
        self._storage = storage
        self._key = key
        self._next_index = next_index

    async def write(self, data: bytes) -> None:
        if not data:
            return
        if self._next_index >= 10**CHUNK_DIGITS:
            raise StorageError(f"segment {self._key!r} has too many chunks")
        path = f"{self._key}/{self._next_index:0{CHUNK_DIGITS}d}"
        await self._storage._call(f"write {path}", obstore.put, self._storage.store, path, data, use_multipart=False)
        self._next_index += 1

    async def close(self) -> None:
        return None  # every write() is already a complete object


class ObjectStorage:
    """Segments as numbered chunk objects in an obstore store (S3, S3-compatible, memory).

    Objects cannot be appended to, and a kill -9 must lose at most the last second of audio, so each
    ``write()`` (about a second of audio) is stored as its own immutable object ``{key}/{n:08d}``. A
    segment's bytes are its chunks concatenated in name order; ``size`` sums a listing and ``read``
    fetches only the chunks (or parts of chunks) a range covers. PUTs are atomic, so a reader that
    runs while the writer appends sees a consistent prefix of the segment (the chunks listed when its
    read began). One writer per key at a time, which the call's lease guarantees.

    Every obstore call is a *synchronous* call in a thread pool owned by this object and shut down in
    `close`: obstore 0.12.1's async API aborts the interpreter at exit now and then (SIGABRT), while
    the synchronous API does not; tests/recordings/test_storage.py proves it over repeated runs.
    """

    def __init__(self, store: ObjectStore, *, threads: int = STORAGE_THREADS) -> None:
        self.store = store
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="switchboard-storage")
        self._closed = False

    async def _call(self, operation: str, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        if self._closed:
            raise StorageError(f"{operation}: storage is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(function, *args, **kwargs))
        except (ObstoreError, OSError) as exc:  # obstore raises FileNotFoundError for missing objects
            raise StorageError(f"{operation} failed: {_describe(exc)}") from exc

    async def _chunks(self, key: str) -> list[tuple[str, int]]:
        return await self._call(f"list {key}", _chunk_list, self.store, _check_key(key))

    async def open_writer(self, key: str) -> SegmentWriter:
        chunks = await self._chunks(key)
        next_index = int(chunks[-1][0].rpartition("/")[2]) + 1 if chunks else 0
        return _ChunkWriter(self, key, next_index)

    async def size(self, key: str) -> int:
        return sum(size for _, size in await self._chunks(key))

    async def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        pieces: list[tuple[str, int, int]] = []  # (chunk path, start, end) within the chunk
        offset = 0
        for path, size in await self._chunks(key):
            if offset >= end:
                break
            low, high = max(start - offset, 0), min(end - offset, size)
            if low < high:
                pieces.append((path, low, high))
            offset += size
        in_flight: deque[asyncio.Future[bytes]] = deque()
        try:
            for path, low, high in pieces:
                in_flight.append(
                    asyncio.ensure_future(self._call(f"read {path}", _get_range, self.store, path, low, high))
                )
                if len(in_flight) >= READ_AHEAD_CHUNKS:
                    yield await in_flight.popleft()
            while in_flight:
                yield await in_flight.popleft()
        finally:
            for future in in_flight:  # a download stopped early: drop what was fetched ahead
                future.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    def open_file(self, key: str) -> BinaryIO:
        try:
            chunks = _chunk_list(self.store, _check_key(key))
        except ObstoreError as exc:
            raise StorageError(f"list {key} failed: {_describe(exc)}") from exc
        # Reads of a decoder are small and mostly sequential: buffered, one GET per megabyte.
        return io.BufferedReader(_ChunkedFile(self.store, chunks), buffer_size=READ_FILE_BUFFER_BYTES)

    async def keys(self, prefix: str) -> list[str]:
        return await self._call(f"list {prefix}", _all_under, self.store, _check_key(prefix))

    async def delete(self, key: str) -> None:
        await self.delete_prefix(key)  # a segment is the folder of its chunks

    async def delete_prefix(self, prefix: str) -> int:
        paths = await self.keys(prefix)
        await self._call(f"delete {prefix}/", _delete_all, self.store, paths)
        return len(paths)

    async def check(self) -> None:
        await self._call("check", _probe, self.store)

    async def close(self) -> None:
        """Wait for the PUTs in flight, then stop the threads: the last chunk is stored before exit."""
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(self._executor.shutdown, wait=True)


def build_storage(url: str) -> RecordingStorage:
    """The storage named by ``SWITCHBOARD_STORAGE_URL``.

    ``s3://BUCKET/PREFIX`` takes everything else from obstore's standard ``AWS_*`` environment
    variables (credentials, region, ``AWS_ENDPOINT_URL`` for S3-compatible stores, ``AWS_ALLOW_HTTP``
    for a plain-http endpoint). Client options are deliberately not passed here: obstore would then
    ignore ``AWS_ALLOW_HTTP`` and the other client settings from the environment.
    """
    parts = urlsplit(url)
    if parts.scheme == "file":
        # file://./data/recordings (relative) and file:///srv/recordings (absolute) both work.
        return LocalStorage(Path(parts.netloc + parts.path).expanduser())
    if parts.scheme == "memory":
        return ObjectStorage(MemoryStore())
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ConfigurationError(f"storage URL {url!r} names no bucket: use s3://BUCKET/PREFIX")
        try:
            return ObjectStorage(S3Store.from_url(url, retry_config=S3_RETRY))
        except ObstoreError as exc:
            raise ConfigurationError(f"S3 storage cannot be configured: {_describe(exc)}") from exc
    raise ConfigurationError(
        f"unknown storage scheme {parts.scheme!r} in SWITCHBOARD_STORAGE_URL: use file://PATH, "
        "s3://BUCKET/PREFIX or memory://"
    )
