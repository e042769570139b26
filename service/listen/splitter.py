"""After a storage outage that dropped audio, the recording continues in a new segment behind a gap.

The :class:`RecordingWriter` calls a :class:`SegmentSplitter` when storage may work again. The splitter
first writes the batch that follows the gap to the next segment's storage key: while storage still
fails that raises :class:`StorageOutage` and nothing is recorded, so an outage that goes on leaves no
empty segments. Once the write worked it closes the current segment at what it stored and opens the
next one with the dropped audio as its gap (exactly, in bytes).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from service.listen.writer import StorageOutage
from service.metrics import Metrics
from service.recordings.service import OpenSegment, RecordingService, segment_key
from service.recordings.storage import RecordingStorage, SegmentWriter

T = TypeVar("T")
GAP_REASON = "storage failed (audio dropped)"


class Persist(Protocol):
    """The session's retry of bookkeeping while the database is briefly unavailable."""

    async def __call__(self, operation: Callable[[], Awaitable[T]], what: str) -> T: ...


class SegmentSplitter:
    """The ``split`` of one connection's writer; :attr:`current` is the segment being written."""

    def __init__(
        self,
        call_id: str,
        segment: OpenSegment,
        *,
        storage: RecordingStorage,
        recordings: RecordingService,
        persist: Persist,
        sample_rate: int,
        channels: int,
        metrics: Metrics,
    ) -> None:
        self.current = segment
        self._call_id = call_id
        self._storage = storage
        self._recordings = recordings
        self._persist = persist
        self._format = (sample_rate, channels)
        self._metrics = metrics

    async def __call__(self, dropped: int, size: int, sha256: str, first: bytes) -> SegmentWriter:
        """Continue behind a gap of ``dropped`` bytes: the next segment's writer, holding ``first``."""
        key = segment_key(self._call_id, self.current.index + 1)  # the next index: the session holds the lease
        try:
            sink = await self._storage.open_writer(key)
        except Exception as exc:
            raise StorageOutage(str(exc)) from exc
        try:
            await sink.write(first)
        except Exception as exc:
            await sink.close()
            raise StorageOutage(str(exc)) from exc
        closing = self.current
        await self._persist(lambda: self._recordings.close_segment(closing, size=size, sha256=sha256), "close segment")
        sample_rate, channels = self._format
        opened = await self._persist(
            lambda: self._recordings.open_segment(
                self._call_id,
                sample_rate=sample_rate,
                channels=channels,
                gap_seconds=None,
                gap_bytes=dropped,
                gap_reason=GAP_REASON,
            ),
            "open segment",
        )
        if opened.key != key:
            raise RuntimeError(f"segment opened as {opened.key}, expected {key}")
        self.current = opened
        self._metrics.listen_gaps.inc()
        return sink
