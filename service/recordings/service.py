"""Recording bookkeeping in the database: segments, gaps, finalisation, and download plans."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload
from uuid_utils.compat import uuid7

from service.calls.service import CallFilters
from service.db.engine import Database, is_postgresql
from service.db.models import Call, Recording, RecordingSegment, VapiRecording, utcnow
from service.db.stores import recordings as sql
from service.deliveries.outbox import enqueue
from service.errors import ConflictError, DomainError, InvalidInputError, NotFoundError
from service.pagination import keyset_page, newest_first, newest_first_cursor
from service.recordings.analysis_queue import queue_analysis
from service.recordings.audio import (
    SAMPLE_BYTES,
    AudioSource,
    Piece,
    SegmentExtent,
    stream_timeline,
    stretch,
    timeline,
    wav_header,
)
from service.recordings.fill import (
    SEARCH_SECONDS,
    Placed,
    WavFormat,
    find_alignment,
    lines_up,
    parse_wav_header,
    probe,
    stitched_pieces,
)
from service.recordings.flac import ArchivedAudio, archive_key
from service.recordings.listening import ListeningCopies
from service.recordings.storage import RecordingStorage


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
    id: uuid.UUID
    status: str


async def _segments_of(session: AsyncSession, call_id: str) -> list[SegmentRow]:
    """The call's segments in order, as finalisation reads them (not locked: the caller holds the lease)."""
    return [SegmentRow(*row) for row in (await session.execute(sql.SEGMENTS_OF, {"call_id": call_id})).tuples()]


def _known_checksum(segments: Sequence[SegmentRow]) -> str | None:
    """The recording's SHA-256 without reading storage: a lone segment's, hashed as it was written."""
    return segments[0].sha256 if len(segments) == 1 and segments[0].sha256 else None


async def _lock_recording(session: AsyncSession, call_id: str) -> Any:
    """The call's recording row (id, gaps, format), locked on PostgreSQL; None without a recording."""
    query = sql.LOCK_RECORDING if is_postgresql(session) else sql.RECORDING_OF
    return (await session.execute(query, {"call_id": call_id})).one_or_none()


def _close_at_stored_size(segment: RecordingSegment, size: int, *, frame: int, byte_rate: int) -> None:
    """Close a segment a dead session left open at the size storage holds, cut to whole frames."""
    segment.bytes, segment.status = size - size % frame, "closed"
    segment.ended_at = _audio_end(segment, byte_rate)


def _audio_end(segment: RecordingSegment, byte_rate: int) -> dt.datetime:
    """When the segment's audio ends on the call's clock."""
    return segment.started_at + dt.timedelta(seconds=segment.bytes / byte_rate)


def _add_gap(recording: Recording, seconds: float, reason: str) -> None:
    """List a gap after the audio and gaps of the recording's segments so far."""
    byte_rate = recording.byte_rate
    heard = sum(segment.gap_before_bytes + segment.bytes for segment in recording.segments)
    gap = {"atSeconds": round(heard / byte_rate, 3), "durationSeconds": round(seconds, 3), "reason": reason}
    recording.gaps = [*recording.gaps, gap]


class _StaleSegments(Exception):  # a signal to read storage first, not an error
    """Segments left open by a dead session, whose sizes must be read from storage first."""

    def __init__(self, keys: dict[uuid.UUID, str]) -> None:
        super().__init__(f"{len(keys)} segments left open")
        self.keys = keys


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
        self._listening = ListeningCopies(db, storage)

    async def open_segment(
        self,
        call_id: str,
        *,
        sample_rate: int,
        channels: int,
        gap_seconds: float | None,
        gap_reason: str,
        gap_bytes: int | None = None,
        started_at: dt.datetime | None = None,
    ) -> OpenSegment:
        """Start a new segment (one per listen connection), recording the gap that precedes it.

        ``started_at``: when the segment's audio began (its connection opened; now if not given). The
        write may come later, under load: offsets into the recording count from this moment.

        ``gap_bytes`` gives the gap exactly (audio a storage outage dropped) and wins over ``gap_seconds``.

        ``gap_seconds=None`` means the caller does not know how long audio was lost (a restart or a
        takeover from another replica): it is estimated from where the previous segment's audio ends.
        Segments still ``open`` belong to a session that died (the caller holds the call's lease): they
        are closed at the size storage holds, cut to whole frames.
        """
        sizes: dict[uuid.UUID, int] = {}  # of segments left open, read from storage outside the transaction
        while True:
            try:
                return await self._open_segment(
                    call_id, sample_rate, channels, gap_seconds, gap_reason, gap_bytes, started_at, sizes
                )
            except _StaleSegments as stale:  # rolled back: storage is not read under the write lock
                for segment_id, stale_key in stale.keys.items():
                    sizes[segment_id] = await self._storage.size(stale_key)

    async def _open_segment(
        self,
        call_id: str,
        sample_rate: int,
        channels: int,
        gap_seconds: float | None,
        gap_reason: str,
        gap_bytes: int | None,
        started_at: dt.datetime | None,
        sizes: dict[uuid.UUID, int],
    ) -> OpenSegment:
        async with self._db.write() as session:
            # The first connection of a call (nearly every session): two inserts, no ORM.
            now, recording_id, segment_id, key = utcnow(), uuid7(), uuid7(), segment_key(call_id, 0)
            started = started_at or now
            first = await session.execute(
                sql.INSERT_RECORDING,
                {
                    "id": recording_id,
                    "call_id": call_id,
                    "status": "recording",
                    "encoding": "pcm_s16le",
                    "sample_rate": sample_rate,
                    "channels": channels,
                    "bytes": 0,
                    "gaps": [],
                    "started_at": started,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            if first.rowcount:  # type: ignore[attr-defined]  # a CursorResult for inserts
                await session.execute(
                    sql.INSERT_SEGMENT,
                    {
                        "id": segment_id,
                        "recording_id": recording_id,
                        "index": 0,
                        "storage_key": key,
                        "started_at": started,
                    },
                )
                return OpenSegment(recording_id, segment_id, 0, key, 0.0)
            recording = await session.scalar(select(Recording).where(Recording.call_id == call_id).with_for_update())
            segments: list[RecordingSegment] = []
            if recording is None:
                recording = Recording(
                    call_id=call_id, sample_rate=sample_rate, channels=channels, started_at=started, gaps=[]
                )
                session.add(recording)
                await session.flush()
            else:
                segments = list(recording.segments)
            byte_rate = recording.byte_rate
            frame = recording.channels * SAMPLE_BYTES
            stale_segments = [segment for segment in segments if segment.status == "open"]
            if unknown := {s.id: s.storage_key for s in stale_segments if s.id not in sizes}:
                raise _StaleSegments(unknown)
            for stale in stale_segments:
                _close_at_stored_size(stale, sizes[stale.id], frame=frame, byte_rate=byte_rate)
            # After a restart or takeover some audio was surely lost, even when the estimate says none.
            unknown_gap = gap_seconds is None
            if segments and gap_seconds is None and gap_bytes is None:
                gap_seconds = max(0.0, (started - _audio_end(segments[-1], byte_rate)).total_seconds())
            if gap_bytes is not None:
                unknown_gap, gap_bytes = False, gap_bytes // frame * frame
            else:
                gap_bytes = int((gap_seconds or 0.0) * byte_rate) // frame * frame if segments else 0
            if segments and (gap_bytes or unknown_gap):
                _add_gap(recording, gap_bytes / byte_rate, gap_reason)
            index = len(segments)
            segment = RecordingSegment(
                recording_id=recording.id,
                index=index,
                storage_key=segment_key(call_id, index),
                gap_before_bytes=gap_bytes,
                started_at=started,
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
                sql.CLOSE_SEGMENT,
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
            abandoned = {segment.id: segment.storage_key for segment in segments if segment.status == "open"}
            if not abandoned and (known := _known_checksum(segments)) is not None:
                return await self._finalized(session, call_id, recording, segments, known, error)
        if abandoned:  # left open by a session that died: closed at their stored size first
            await self._close_abandoned(call_id, abandoned)
            async with self._db.read() as session:
                segments = await _segments_of(session, call_id)
        sha256 = await self._checksum(segments)  # may read stored audio: outside the write transaction
        async with self._db.write() as session:
            recording = await _lock_recording(session, call_id)
            if recording is None:
                return None
            return await self._finalized(session, call_id, recording, segments, sha256, error)

    async def _close_abandoned(self, call_id: str, keys: dict[uuid.UUID, str]) -> None:
        """Close the segments (id: storage key) a session that died left open (a crash, kill -9, a
        replica lost) at their stored size, and list what was not heard from their end to the call's end
        as a gap: a call that ended before anyone adopted it is finalised with the audio it has. Storage
        is read outside the write transaction."""
        sizes = {segment_id: await self._storage.size(key) for segment_id, key in keys.items()}
        async with self._db.write() as session:
            recording = await session.scalar(select(Recording).where(Recording.call_id == call_id).with_for_update())
            ended_at = await session.scalar(select(Call.ended_at).where(Call.id == call_id))
            if recording is None:
                return
            frame, byte_rate = recording.channels * SAMPLE_BYTES, recording.byte_rate
            closed = [s for s in recording.segments if s.status == "open" and s.id in sizes]
            for segment in closed:
                _close_at_stored_size(segment, sizes[segment.id], frame=frame, byte_rate=byte_rate)
            if not closed:
                return
            audio_end = _audio_end(recording.segments[-1], byte_rate)
            lost = max(0.0, (ended_at - audio_end).total_seconds()) if ended_at is not None else 0.0
            _add_gap(recording, lost, "not recorded (restart or takeover)")

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
            sql.FINALIZE,
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
        await queue_analysis(session, call_id, recording_status=status)
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
        query = newest_first(query, Recording.created_at, Recording.id, cursor, id_type=uuid.UUID).limit(limit + 1)
        async with self._db.read() as session:
            rows = [(row[0], row[1]) for row in (await session.execute(query)).all()]
        return keyset_page(rows, limit, lambda row: newest_first_cursor(row[0]))

    async def pcm_download(self, call_id: str) -> Download:
        view = await self.view(call_id)
        return pcm_download(view, self._source(view))

    async def wav_download(
        self,
        call_id: str,
        *,
        channel: int | None,
        start: float | None = None,
        end: float | None = None,
        fill_vapi: bool = False,
    ) -> Download:
        """The WAV download, or the stretch ``[start, end)`` seconds of it; with ``fill_vapi``, the whole
        recording with its gaps filled from Vapi's copy."""
        if fill_vapi and (start is not None or end is not None):
            raise InvalidInputError("fill=vapi serves the whole recording: it cannot be combined with start or end")
        view = await self.view(call_id)
        if fill_vapi:
            return await self._filled(call_id, view, wav_download(view, self._source(view), channel=channel))
        return wav_download(view, self._source(view), channel=channel, start=start, end=end)

    async def _filled(self, call_id: str, view: RecordingView, download: Download) -> Download:
        """The recording as a stereo WAV on Vapi's timeline, its gaps read from Vapi's copy
        (``recordings.fill``): 409 when the copy is missing, its format differs, or a segment cannot be
        found in it byte for byte."""
        recording = view.recording
        if download.channel is not None or recording.format != "pcm":
            raise ConflictError(
                "fill=vapi needs the whole (not one channel's) recording, kept raw", recordingFormat=recording.format
            )
        copy, key = await self.vapi_download(call_id)
        total = copy.bytes or 0
        head = b"".join([chunk async for chunk in self._storage.read(key, 0, min(total, 4096))])
        fmt = parse_wav_header(head, total=total)
        if fmt is None or not lines_up(fmt, sample_rate=recording.sample_rate, channels=recording.channels):
            raise ConflictError(f"Vapi's recording of call {call_id!r} is not in the live recording's format")
        block = recording.channels * SAMPLE_BYTES
        placed: list[Placed] = []
        position, shift = 0, 0  # in the live timeline; live → Vapi offset found so far
        for piece in download.pieces:
            if piece.key is not None:
                at = await self._place(piece, fmt, key, block, guess=position + shift)
                if at is None:
                    raise ConflictError(
                        f"the live and Vapi's recordings of call {call_id!r} do not align byte for byte"
                    )
                placed.append(Placed(piece.key, piece.length, at))
                shift = at - position
            position += piece.length
        pieces = stitched_pieces(placed, key=key, data_offset=fmt.data_offset)
        header = wav_header(
            sum(p.length for p in pieces), sample_rate=recording.sample_rate, channels=recording.channels
        )
        return Download(self._storage, header, pieces, None, recording.channels)

    async def _place(self, piece: Piece, fmt: WavFormat, key: str, block: int, *, guess: int) -> int | None:
        """Where segment ``piece`` starts in Vapi's audio, searched within :data:`SEARCH_SECONDS` of
        ``guess`` (where the live timeline puts it)."""
        window = fmt.sample_rate * block * SEARCH_SECONDS
        segment = b"".join([chunk async for chunk in self._storage.read(piece.key or "", 0, min(piece.length, window))])
        found = probe(segment, block=block)
        if found is None:
            return None
        lo = max(0, guess - window)
        lo -= lo % block
        hi = min(fmt.data_bytes, guess + window + len(segment))
        vapi_audio = b"".join(
            [chunk async for chunk in self._storage.read(key, fmt.data_offset + lo, fmt.data_offset + hi)]
        )
        at = find_alignment(vapi_audio, found, probe_at=0, block=block)
        return None if at is None else lo + at

    async def flac_download(self, call_id: str) -> Download:
        """The recording's lossless archive as stored: 404 while the recording is kept raw."""
        recording = (await self.view(call_id)).recording
        if recording.format != "flac":
            raise NotFoundError(
                f"the recording of call {call_id!r} is not archived as FLAC (it is stored as {recording.format})",
                recordingFormat=recording.format,
            )
        pieces = [Piece(recording.stored_bytes or 0, archive_key(call_id))]
        return Download(self._storage, b"", pieces, None, recording.channels)

    async def ogg_download(self, call_id: str) -> Download:
        """The Opus listening copy (made on the first request): 409 while the call is still recorded."""
        view = await self.view(call_id)
        recording = view.recording
        if recording.status == "recording":
            raise ConflictError(
                f"call {call_id!r} is still being recorded: its listening copy is made once the recording is "
                "finished (recording.wav serves it now)",
                recordingStatus=recording.status,
            )
        wav = wav_download(view, self._source(view), channel=None)
        key, size = await self._listening.ensure(recording, wav.stream(len(wav.prefix), wav.total))
        return Download(self._storage, b"", [Piece(size, key)], None, recording.channels)

    def _source(self, view: RecordingView) -> AudioSource:
        """Where the recording's audio is read: its raw segments, or its archive."""
        if view.recording.format == "flac":
            return ArchivedAudio(self._storage, view.recording.call_id, view.extents, view.recording.channels)
        return self._storage

    async def view(self, call_id: str) -> RecordingView:
        """The call's recording, for downloads: 404 while nothing has been recorded."""
        view = await self.describe(call_id)
        if view is None:
            raise NotFoundError(f"call {call_id!r} has no recording yet", recordingStatus="none")
        return view

    async def vapi_copy(self, call_id: str) -> VapiRecording | None:
        """The call's copy of Vapi's recording (or its pending download); None when it has none."""
        async with self._db.read() as session:
            return await session.get(VapiRecording, call_id)

    async def vapi_download(self, call_id: str) -> tuple[VapiRecording, str]:
        """The stored copy of Vapi's recording and its storage key: 404 while there is none."""
        copy = await self.vapi_copy(call_id)
        if copy is None or copy.status != "stored" or copy.storage_key is None:
            raise NotFoundError(
                f"call {call_id!r} has no copy of Vapi's recording", vapiCopyStatus=copy.status if copy else "none"
            )
        return copy, copy.storage_key

    async def vapi_file_download(self, call_id: str) -> tuple[Download, str]:
        """The stored copy of Vapi's recording as a download, byte for byte, and its media type."""
        copy, key = await self.vapi_download(call_id)
        return Download(self._storage, b"", [Piece(copy.bytes or 0, key)], None, 1), copy.content_type or "audio/wav"

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

    storage: AudioSource
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


def _stretch_of(
    pieces: list[Piece], sample_rate: int, block: int, start: float | None, end: float | None
) -> list[Piece]:
    """The pieces of seconds ``[start, end)`` (``block``: output bytes per sample of all channels)."""
    begin = start or 0.0
    if end is not None and end <= begin:
        raise InvalidInputError("end must be after start", start=begin, end=end)
    total = sum(piece.length for piece in pieces)
    first = round(begin * sample_rate) * block
    last = total if end is None else min(total, round(end * sample_rate) * block)
    if first >= total:
        duration = total / (sample_rate * block) if sample_rate else 0.0
        raise StretchOutsideError(f"start {begin:g} s is past the end of the recording ({duration:.3f} s)")
    return stretch(pieces, first, last)


class StretchOutsideError(DomainError):
    status_code = 416
    slug = "range-not-satisfiable"
    title = "Range not satisfiable"


def pcm_download(view: RecordingView, storage: AudioSource) -> Download:
    """Exactly the bytes received, in order, nothing added."""
    channels = view.recording.channels
    pieces = timeline(view.extents, channels=channels, fill_gaps=False, mono=False)
    return Download(storage, b"", pieces, None, channels)


def wav_download(
    view: RecordingView,
    storage: AudioSource,
    *,
    channel: int | None,
    start: float | None = None,
    end: float | None = None,
) -> Download:
    """A WAV whose timeline matches the call: gaps filled with silence; optionally one channel; optionally
    only the seconds ``[start, end)`` of it (cut at whole samples; ``end`` past the end is the end)."""
    channels = view.recording.channels
    mono = channel is not None and channels > 1
    pieces = timeline(view.extents, channels=channels, fill_gaps=True, mono=mono)
    if start is not None or end is not None:
        pieces = _stretch_of(pieces, view.recording.sample_rate, (1 if mono else channels) * SAMPLE_BYTES, start, end)
    header = wav_header(
        sum(piece.length for piece in pieces),
        sample_rate=view.recording.sample_rate,
        channels=1 if mono else channels,
    )
    return Download(storage, header, pieces, channel if mono else None, channels)
