"""Recording bookkeeping in the database: segments, gaps, finalisation, and download plans."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import bindparam, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from uuid_utils.compat import uuid7

from service.calls.service import CallFilters
from service.db.engine import Database
from service.db.models import Call, Recording, RecordingSegment, utcnow
from service.db.statements import insert_ignoring_conflicts, table_of
from service.deliveries.outbox import enqueue
from service.errors import InvalidInputError, NotFoundError
from service.pagination import BAD_CURSOR, decode_newest_first, encode_newest_first
from service.recordings.audio import SAMPLE_BYTES, Piece, SegmentExtent, stream_timeline, timeline, wav_header
from service.recordings.storage import RecordingStorage

_RECORDING = table_of(Recording)
_SEGMENT = table_of(RecordingSegment)
_NEW_RECORDING = ("id", "call_id", "status", "encoding", "sample_rate", "channels", "bytes", "gaps", "started_at")
_INSERT_RECORDING = insert_ignoring_conflicts(_RECORDING, (*_NEW_RECORDING, "created_at", "updated_at"), ("call_id",))


@dataclass(frozen=True, slots=True)
class Finalized:
    """A recording as :meth:`RecordingService.finalize` closed it."""

    status: str  # completed, partial or failed
    bytes: int
    sha256: str
    gaps: list[dict[str, Any]]
    error: str | None
    seconds: float


class SegmentRow(NamedTuple):
    storage_key: str
    bytes: int
    sha256: str | None


# Hot-path statements, built once (a statement built per call is also keyed for the cache per call).
_INSERT_SEGMENT = insert(_SEGMENT)
_CLOSE_SEGMENT = update(_SEGMENT).where(_SEGMENT.c.id == bindparam("segment_id"))  # SET: the other parameters
_SEGMENTS_OF = (
    select(_SEGMENT.c.storage_key, _SEGMENT.c.bytes, _SEGMENT.c.sha256)
    .join(_RECORDING, _RECORDING.c.id == _SEGMENT.c.recording_id)
    .where(_RECORDING.c.call_id == bindparam("call_id"))
    .order_by(_SEGMENT.c.index)
)
_RECORDING_OF = select(_RECORDING.c.id, _RECORDING.c.gaps, _RECORDING.c.sample_rate, _RECORDING.c.channels).where(
    _RECORDING.c.call_id == bindparam("call_id")
)
_LOCK_RECORDING = _RECORDING_OF.with_for_update()
_FINALIZE = update(_RECORDING).where(_RECORDING.c.id == bindparam("recording_id"))  # SET: the other parameters


async def _segments_of(session: AsyncSession, call_id: str) -> list[SegmentRow]:
    """The call's segments in order, as finalisation reads them (not locked: the caller holds the lease)."""
    return [SegmentRow(*row) for row in (await session.execute(_SEGMENTS_OF, {"call_id": call_id})).tuples()]


def _known_checksum(segments: Sequence[SegmentRow]) -> str | None:
    """The recording's SHA-256 without reading storage: a lone segment's, hashed as it was written."""
    return segments[0].sha256 if len(segments) == 1 and segments[0].sha256 else None


async def _lock_recording(session: AsyncSession, call_id: str) -> Any:
    """The call's recording row (id, gaps, format), locked on PostgreSQL; None without a recording."""
    query = _LOCK_RECORDING if session.bind.dialect.name == "postgresql" else _RECORDING_OF
    return (await session.execute(query, {"call_id": call_id})).one_or_none()


@dataclass(frozen=True, slots=True)
class OpenSegment:
    recording_id: uuid.UUID
    segment_id: uuid.UUID
    index: int
    key: str
    gap_seconds: float


@dataclass(frozen=True, slots=True)
class RecordingView:
    """A recording with the live size of segments still being written."""

    recording: Recording
    extents: list[SegmentExtent]

    @property
    def bytes(self) -> int:
        return sum(extent.bytes for extent in self.extents)

    @property
    def duration_seconds(self) -> float:
        return self.recording.seconds(self.bytes)


def segment_key(call_id: str, index: int) -> str:
    """The storage key of a call's ``index``-th segment."""
    return f"{call_id}/{index:04d}.pcm"


class RecordingService:
    def __init__(self, db: Database, storage: RecordingStorage) -> None:
        self._db = db
        self._storage = storage

    async def open_segment(
        self,
        call_id: str,
        *,
        sample_rate: int,
        channels: int,
        gap_seconds: float | None,
        gap_reason: str,
        gap_bytes: int | None = None,
    ) -> OpenSegment:
        """Start a new segment (one per listen connection), recording the gap that precedes it.

        ``gap_bytes`` gives the gap exactly (audio a storage outage dropped) and wins over ``gap_seconds``.

        ``gap_seconds=None`` means the caller does not know how long audio was lost (a restart or a
        takeover from another replica): it is estimated from where the previous segment's audio ends.
        Segments still ``open`` belong to a session that died (the caller holds the call's lease): they
        are closed at the size storage holds, cut to whole frames.
        """
        async with self._db.write() as session:
            # The first connection of a call (nearly every session): two inserts, no ORM.
            now, recording_id, segment_id, key = utcnow(), uuid7(), uuid7(), segment_key(call_id, 0)
            first = await session.execute(
                _INSERT_RECORDING,
                {
                    "id": recording_id,
                    "call_id": call_id,
                    "status": "recording",
                    "encoding": "pcm_s16le",
                    "sample_rate": sample_rate,
                    "channels": channels,
                    "bytes": 0,
                    "gaps": [],
                    "started_at": now,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            if first.rowcount:  # type: ignore[attr-defined]  # a CursorResult for inserts
                await session.execute(
                    _INSERT_SEGMENT,
                    {"id": segment_id, "recording_id": recording_id, "index": 0, "storage_key": key, "started_at": now},
                )
                return OpenSegment(recording_id, segment_id, 0, key, 0.0)
            recording = await session.scalar(select(Recording).where(Recording.call_id == call_id).with_for_update())
            segments: list[RecordingSegment] = []
            if recording is None:
                recording = Recording(
                    call_id=call_id, sample_rate=sample_rate, channels=channels, started_at=utcnow(), gaps=[]
                )
                session.add(recording)
                await session.flush()
            else:
                segments = list(recording.segments)
            byte_rate = recording.byte_rate
            frame = recording.channels * SAMPLE_BYTES
            for stale in (segment for segment in segments if segment.status == "open"):
                size = await self._storage.size(stale.storage_key)
                stale.bytes, stale.status = size - size % frame, "closed"
                stale.ended_at = stale.started_at + dt.timedelta(seconds=stale.bytes / byte_rate)
            # After a restart or takeover some audio was surely lost, even when the estimate says none.
            unknown_gap = gap_seconds is None
            if segments and gap_seconds is None and gap_bytes is None:
                last = segments[-1]
                audio_end = last.started_at + dt.timedelta(seconds=last.bytes / byte_rate)
                gap_seconds = max(0.0, (utcnow() - audio_end).total_seconds())
            if gap_bytes is not None:
                unknown_gap, gap_bytes = False, gap_bytes // frame * frame
            else:
                gap_bytes = int((gap_seconds or 0.0) * byte_rate) // frame * frame if segments else 0
            if segments and (gap_bytes or unknown_gap):
                timeline_bytes = sum(s.gap_before_bytes + s.bytes for s in segments)
                recording.gaps = [
                    *recording.gaps,
                    {
                        "atSeconds": round(timeline_bytes / byte_rate, 3),
                        "durationSeconds": round(gap_bytes / byte_rate, 3),
                        "reason": gap_reason,
                    },
                ]
            index = len(segments)
            segment = RecordingSegment(
                recording_id=recording.id,
                index=index,
                storage_key=segment_key(call_id, index),
                gap_before_bytes=gap_bytes,
            )
            session.add(segment)
            recording.status = "recording"
            await session.flush()
            return OpenSegment(recording.id, segment.id, index, segment.storage_key, gap_bytes / byte_rate)

    async def is_open(self, call_id: str) -> bool:
        """Whether the call has a recording that was never finalised."""
        async with self._db.read() as session:
            status = await session.scalar(select(Recording.status).where(Recording.call_id == call_id))
        return status == "recording"

    async def set_format(self, call_id: str, *, sample_rate: int, channels: int) -> bool:
        """Adopt a format the listen socket announced, as long as no audio has been stored yet."""
        async with self._db.write() as session:
            recording = await session.scalar(select(Recording).where(Recording.call_id == call_id).with_for_update())
            if recording is None or recording.bytes or any(s.bytes for s in recording.segments):
                return False
            recording.sample_rate, recording.channels = sample_rate, channels
            return True

    async def close_segment(self, segment: OpenSegment, *, size: int, sha256: str) -> None:
        async with self._db.write() as session:
            await session.execute(
                _CLOSE_SEGMENT,
                {
                    "segment_id": segment.segment_id,
                    "bytes": size,
                    "sha256": sha256,
                    "status": "closed",
                    "ended_at": utcnow(),
                },
            )

    async def finalize(self, call_id: str, *, error: str | None = None) -> Finalized | None:
        """Mark the recording ``completed`` / ``partial`` / ``failed`` with its size and checksum.

        One write transaction when the checksum is known (one segment, hashed as it was written:
        nearly every call); otherwise the segments are read, hashed from storage outside any
        transaction, and the recording is finalised in a second one.
        """
        async with self._db.write() as session:
            # The recording is locked before its segments are read: none can be added in between.
            recording = await _lock_recording(session, call_id)
            if recording is None:
                return None
            segments = await _segments_of(session, call_id)
            if (known := _known_checksum(segments)) is not None:
                return await self._finalized(session, call_id, recording, segments, known, error)
        sha256 = await self._checksum(segments)  # may read stored audio: outside the write transaction
        async with self._db.write() as session:
            recording = await _lock_recording(session, call_id)
            if recording is None:
                return None
            return await self._finalized(session, call_id, recording, segments, sha256, error)

    async def _finalized(
        self,
        session: AsyncSession,
        call_id: str,
        recording: Any,
        segments: Sequence[SegmentRow],
        sha256: str,
        error: str | None,
    ) -> Finalized:
        size = sum(segment.bytes for segment in segments)
        gaps: list[dict[str, Any]] = recording.gaps
        status = "failed" if size == 0 and error else "partial" if gaps or error else "completed"
        byte_rate = recording.sample_rate * recording.channels * SAMPLE_BYTES
        finalized = Finalized(status, size, sha256, gaps, error, size / byte_rate if byte_rate else 0.0)
        now = utcnow()
        await session.execute(
            _FINALIZE,
            {
                "recording_id": recording.id,
                "status": status,
                "bytes": size,
                "sha256": finalized.sha256,
                "error": error,
                "completed_at": now,
                "updated_at": now,
            },
        )
        await enqueue(
            session,
            "recording.completed",
            {
                "callId": call_id,
                "status": status,
                "bytes": size,
                "durationSeconds": round(finalized.seconds, 3),
                "sha256": finalized.sha256,
                "gaps": gaps,
                "error": error,
            },
        )
        return finalized

    async def _checksum(self, segments: Sequence[SegmentRow]) -> str:
        if (known := _known_checksum(segments)) is not None:
            return known
        digest = hashlib.sha256()  # of nothing, for a recording without segments
        for segment in segments:
            async for chunk in self._storage.read(segment.storage_key, 0, segment.bytes):
                digest.update(chunk)
        return digest.hexdigest()

    async def search(
        self,
        filters: CallFilters,
        *,
        status: str | None,
        min_duration_seconds: float | None,
        limit: int,
        cursor: str | None,
    ) -> tuple[list[tuple[Recording, Call]], str | None]:
        """Recordings across calls, newest first, keyset-paginated on ``(created_at, id)``."""
        query = filters.apply(select(Recording, Call).join(Call, Recording.call_id == Call.id))
        if status:
            query = query.where(Recording.status == status)
        if min_duration_seconds is not None:
            query = query.where(Recording.bytes >= min_duration_seconds * Recording.byte_rate)
        if cursor:
            created_at, last_id = decode_newest_first(cursor)
            try:
                recording_id = uuid.UUID(last_id)
            except ValueError:
                raise InvalidInputError(BAD_CURSOR) from None
            query = query.where(tuple_(Recording.created_at, Recording.id) < (created_at, recording_id))
        query = query.order_by(Recording.created_at.desc(), Recording.id.desc()).limit(limit + 1)
        async with self._db.read() as session:
            rows = [(row[0], row[1]) for row in (await session.execute(query)).all()]
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1][0]
            next_cursor = encode_newest_first(last.created_at, last.id)
        return rows, next_cursor

    async def pcm_download(self, call_id: str) -> Download:
        return pcm_download(await self.view(call_id), self._storage)

    async def wav_download(self, call_id: str, *, channel: int | None) -> Download:
        return wav_download(await self.view(call_id), self._storage, channel=channel)

    async def view(self, call_id: str) -> RecordingView:
        """The call's recording, for downloads: 404 while nothing has been recorded."""
        view = await self.describe(call_id)
        if view is None:
            raise NotFoundError(f"call {call_id!r} has no recording yet", recordingStatus="none")
        return view

    async def describe(self, call_id: str) -> RecordingView | None:
        """The call's recording (None: nothing recorded yet); open segments report what storage holds."""
        async with self._db.read() as session:
            call = await session.scalar(select(Call).where(Call.id == call_id).options(selectinload(Call.recording)))
        if call is None:
            raise NotFoundError(f"no call with id {call_id!r}")
        if call.recording is None:
            return None
        extents = []
        for segment in call.recording.segments:
            size = segment.bytes if segment.status == "closed" else await self._storage.size(segment.storage_key)
            extents.append(SegmentExtent(segment.storage_key, size, segment.gap_before_bytes))
        return RecordingView(call.recording, extents)


@dataclass(frozen=True, slots=True)
class Download:
    """A downloadable view of a recording: an optional header, then a timeline of pieces."""

    storage: RecordingStorage
    prefix: bytes
    pieces: list[Piece]
    channel: int | None
    channels: int

    @property
    def total(self) -> int:
        return len(self.prefix) + sum(piece.length for piece in self.pieces)

    async def stream(self, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of the download."""
        prefix = len(self.prefix)
        if start < prefix:
            yield self.prefix[start : min(end, prefix)]
        if end > prefix:
            async for chunk in stream_timeline(
                self.storage,
                self.pieces,
                max(start - prefix, 0),
                end - prefix,
                channel=self.channel,
                channels=self.channels,
            ):
                yield chunk


def pcm_download(view: RecordingView, storage: RecordingStorage) -> Download:
    """Exactly the bytes received, in order, nothing added."""
    channels = view.recording.channels
    pieces = timeline(view.extents, channels=channels, fill_gaps=False, mono=False)
    return Download(storage, b"", pieces, None, channels)


def wav_download(view: RecordingView, storage: RecordingStorage, *, channel: int | None) -> Download:
    """A WAV whose timeline matches the call: gaps filled with silence; optionally one channel."""
    channels = view.recording.channels
    mono = channel is not None and channels > 1
    pieces = timeline(view.extents, channels=channels, fill_gaps=True, mono=mono)
    header = wav_header(
        sum(piece.length for piece in pieces),
        sample_rate=view.recording.sample_rate,
        channels=1 if mono else channels,
    )
    return Download(storage, header, pieces, channel if mono else None, channels)
