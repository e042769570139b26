"""Where recording segments live: local files (default) or memory (tests).

A segment is written once, front to back, by one writer (the listen session that owns it), and read
by any number of downloads, also while it is still being written.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol, runtime_checkable
from urllib.parse import urlsplit

from service.settings import ConfigurationError

READ_CHUNK_BYTES = 256 * 1024


class SegmentWriter(Protocol):
    async def write(self, data: bytes) -> None:
        """Append ``data`` durably enough to survive the process being killed."""

    async def close(self) -> None: ...


@runtime_checkable
class RecordingStorage(Protocol):
    async def open_writer(self, key: str) -> SegmentWriter:
        """Open ``key`` for appending (created if missing; existing bytes are kept)."""

    async def size(self, key: str) -> int:
        """Bytes stored under ``key`` (0 when missing)."""

    def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Stream bytes ``[start, end)`` of ``key``."""

    async def check(self) -> None:
        """Raise when the storage is not usable (readiness)."""

    async def close(self) -> None: ...


class _FileWriter:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)

    async def write(self, data: bytes) -> None:
        # Writes are batched by the caller (~1 s of audio), so one write into the page cache per
        # second per call: cheap enough for the event loop, and it survives kill -9.
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]

    async def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class LocalStorage:
    """Segments as files under a root folder."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
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
        path = self._path(key)
        with path.open("rb") as handle:
            handle.seek(start)
            remaining = end - start
            while remaining > 0:
                chunk = await asyncio.to_thread(handle.read, min(READ_CHUNK_BYTES, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk

    async def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise OSError(f"recordings folder {self.root} is not writable")

    async def close(self) -> None:
        return None


class _MemoryWriter:
    def __init__(self, buffer: bytearray) -> None:
        self._buffer = buffer

    async def write(self, data: bytes) -> None:
        self._buffer += data

    async def close(self) -> None:
        return None


class MemoryStorage:
    """Segments in a dict; for tests."""

    def __init__(self) -> None:
        self.objects: dict[str, bytearray] = {}

    async def open_writer(self, key: str) -> SegmentWriter:
        return _MemoryWriter(self.objects.setdefault(key, bytearray()))

    async def size(self, key: str) -> int:
        return len(self.objects.get(key, b""))

    async def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        data = bytes(self.objects.get(key, b"")[start:end])
        for offset in range(0, len(data), READ_CHUNK_BYTES):
            yield data[offset : offset + READ_CHUNK_BYTES]

    async def check(self) -> None:
        return None

    async def close(self) -> None:
        return None


def build_storage(url: str) -> RecordingStorage:
    """The storage named by ``SWITCHBOARD_STORAGE_URL``."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        # file://./data/recordings (relative) and file:///srv/recordings (absolute) both work.
        return LocalStorage(Path(parts.netloc + parts.path).expanduser())
    if parts.scheme == "memory":
        return MemoryStorage()
    raise ConfigurationError(
        f"storage scheme {parts.scheme!r} is not available in this version; use file:// or memory://"
    )
