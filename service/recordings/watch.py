"""Storage whose write failures reach readiness: ``/readyz`` turns red while recording writes fail.

A full disk or a refused bucket does not show in a probe that only checks the folder or lists the
bucket; the writers that hit it do. :class:`WatchedStorage` wraps the configured storage, notes every
segment writer whose last write failed, and fails :meth:`check` until each of them has written again
(or closed).
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import AsyncIterator, Callable
from typing import BinaryIO

from service.recordings.storage import RecordingStorage, SegmentWriter, StorageError, inline_writer


class _WatchedWriter:
    def __init__(self, inner: SegmentWriter, key: str, watch: WatchedStorage) -> None:
        self._inner = inner
        self._key = key
        self._watch = watch
        inline = inline_writer(inner)
        # Offered only when the inner writer has it (see SegmentWriter).
        self.write_inline: Callable[[bytes | bytearray | memoryview], None] | None = (
            None if inline is None else functools.partial(self._write_inline, inline)
        )

    async def write(self, data: bytes) -> None:
        try:
            await self._inner.write(data)
        except Exception as exc:
            self._failed(exc)
            raise
        self._watch.failing.pop(self, None)

    def _write_inline(
        self, inline: Callable[[bytes | bytearray | memoryview], None], data: bytes | bytearray | memoryview
    ) -> None:
        try:
            inline(data)
        except Exception as exc:
            self._failed(exc)
            raise
        self._watch.failing.pop(self, None)

    def _failed(self, exc: Exception) -> None:
        self._watch.failing[self] = f"{self._key}: {exc}"[:300]

    async def close(self) -> None:
        self._watch.failing.pop(self, None)
        await self._inner.close()


class WatchedStorage:
    """A :class:`RecordingStorage` that also reports writers whose last write failed."""

    def __init__(self, inner: RecordingStorage) -> None:
        self.inner = inner
        # writer → its last error, while it has not written since (weak: a writer dropped unclosed, by a
        # crashed session, does not keep readiness red forever)
        self.failing: weakref.WeakKeyDictionary[_WatchedWriter, str] = weakref.WeakKeyDictionary()

    async def open_writer(self, key: str) -> SegmentWriter:
        """Open ``key`` for appending, through the watch."""
        return _WatchedWriter(await self.inner.open_writer(key), key, self)

    async def size(self, key: str) -> int:
        """Bytes stored under ``key``."""
        return await self.inner.size(key)

    def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of ``key``."""
        return self.inner.read(key, start, end)

    async def check(self) -> None:
        """Fail while any recording's writes are failing, else ask the storage itself."""
        if self.failing:
            example = next(iter(self.failing.values()))
            raise StorageError(f"{len(self.failing)} recording writer(s) failing, e.g. {example}")
        await self.inner.check()

    def open_file(self, key: str) -> BinaryIO:
        """``key`` as a seekable file, for the archive's reader."""
        return self.inner.open_file(key)

    async def keys(self, prefix: str) -> list[str]:
        """The keys stored under ``prefix``."""
        return await self.inner.keys(prefix)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def delete_prefix(self, prefix: str) -> int:
        """Delete everything under ``prefix`` (erasure); how many objects were deleted."""
        return await self.inner.delete_prefix(prefix)

    async def close(self) -> None:
        """Close the storage."""
        await self.inner.close()
