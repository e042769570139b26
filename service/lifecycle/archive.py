"""The lossless archive: a finished recording re-encoded as one FLAC file, served as the exact PCM.

A recording's PCM is its segments concatenated (gaps are not audio: they stay as metadata, in the
recording row and in the archive's comment tag). Archiving one recording:

1. claim it (``archiving_until``, one archiver per recording across replicas);
2. encode the segments, streamed from storage block by block, into a local temporary FLAC
   (``soundfile``/libsndfile, 16-bit, every channel), hashing the PCM on the way;
3. decode the temporary file block by block and check the SHA-256 equals the recording's: the round
   trip is proven before anything is removed;
4. upload it as ``{call_id}/recording.flac``, then mark the recording ``flac`` (one transaction);
5. delete the raw segments.

A crash before step 4 commits leaves the raw segments untouched (the claim lapses and a later pass
starts again); after it, at worst raw segments are left over, which erasure still removes.

Downloads read an archived recording through ``service.recordings.flac.ArchivedAudio``, which maps a
segment's byte range onto the decoded archive: the WAV/PCM/Range/channel code is the same for both
formats. Memory stays bounded: encoding and decoding move ``BLOCK_FRAMES`` frames at a time.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import soundfile
import structlog
from sqlalchemy import func, or_, select, update

from service.db.engine import Database
from service.db.models import Call, Recording, RecordingSegment, utcnow
from service.recordings.audio import SAMPLE_BYTES, SegmentExtent
from service.recordings.flac import ARCHIVE_NAME, BLOCK_FRAMES, archive_key
from service.recordings.storage import RecordingStorage, StorageError

log = structlog.get_logger(__name__)

UPLOAD_CHUNK_BYTES = 1024 * 1024  # one object per MiB on S3; what the upload holds in memory
CLAIM_SECONDS = 600.0  # an archiver's claim on one recording (a one-hour recording takes a few seconds)
FINISHED = ("completed", "partial")


class ArchiveError(Exception):
    """A recording cannot be archived (its stored audio does not match, or storage failed)."""


@dataclass(frozen=True, slots=True)
class Archived:
    call_id: str
    raw_bytes: int
    stored_bytes: int


@dataclass(frozen=True, slots=True)
class _Job:
    recording_id: Any
    call_id: str
    sample_rate: int
    channels: int
    sha256: str
    gaps: list[dict[str, Any]]
    segments: list[SegmentExtent]


def _encode_block(target: soundfile.SoundFile, data: bytes) -> None:
    target.buffer_write(data, dtype="int16")


def _decoded_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with soundfile.SoundFile(path) as source:
        while block := source.buffer_read(BLOCK_FRAMES, dtype="int16"):
            digest.update(block)
    return digest.hexdigest()


class Archiver:
    """Archives finished PCM recordings as FLAC, one at a time, claimed across replicas."""

    def __init__(self, db: Database, storage: RecordingStorage, *, claim_seconds: float = CLAIM_SECONDS) -> None:
        self._db = db
        self._storage = storage
        self._claim = dt.timedelta(seconds=claim_seconds)

    async def pending(self) -> int:
        """Finished recordings still stored raw."""
        async with self._db.read() as session:
            query = select(func.count()).where(Recording.format == "pcm", Recording.status.in_(FINISHED))
            return int(await session.scalar(query) or 0)

    async def archive_next(self) -> Archived | None:
        """Claim one finished PCM recording and archive it; None when there is nothing (left) to claim.

        A recording that cannot be archived keeps its raw segments and its claim (tried again once the
        claim lapses); the error is logged and raised as :class:`ArchiveError`.
        """
        job = await self._claim_next()
        if job is None:
            return None
        try:
            return await self._archive(job)
        except (ArchiveError, StorageError, soundfile.LibsndfileError, OSError) as exc:
            log.warning("recording not archived; raw segments kept", call_id=job.call_id, error=str(exc))
            raise ArchiveError(f"call {job.call_id}: {exc}") from exc

    async def _claim_next(self) -> _Job | None:
        now = utcnow()
        async with self._db.write() as session:
            query = (
                select(Recording)
                .where(
                    Recording.format == "pcm",
                    Recording.status.in_(FINISHED),
                    Recording.sha256.is_not(None),
                    or_(Recording.archiving_until.is_(None), Recording.archiving_until < now),
                )
                .order_by(Recording.completed_at)
                .limit(1)
            )
            if not self._db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            recording = await session.scalar(query)
            if recording is None:
                return None
            recording.archiving_until = now + self._claim
            segments: list[RecordingSegment] = list(recording.segments)
            return _Job(
                recording.id,
                recording.call_id,
                recording.sample_rate,
                recording.channels,
                recording.sha256 or "",
                list(recording.gaps),
                [SegmentExtent(s.storage_key, s.bytes, s.gap_before_bytes) for s in segments],
            )

    async def _archive(self, job: _Job) -> Archived:
        frame = job.channels * SAMPLE_BYTES
        if any(segment.bytes % frame for segment in job.segments):
            raise ArchiveError("a segment ends inside a frame: FLAC holds whole frames only")
        raw_bytes = sum(segment.bytes for segment in job.segments)
        with tempfile.TemporaryDirectory(prefix="switchboard-archive-") as folder:
            path = Path(folder) / ARCHIVE_NAME
            encoded_sha256 = await self._encode(job, path)
            if encoded_sha256 != job.sha256:
                raise ArchiveError("the stored segments do not match the recording's SHA-256")
            if await asyncio.to_thread(_decoded_sha256, path) != job.sha256:
                raise ArchiveError("the FLAC round trip does not give back the recording's PCM")
            stored_bytes = (await asyncio.to_thread(path.stat)).st_size
            await self._upload(path, archive_key(job.call_id), stored_bytes)
        if not await self._mark_archived(job, stored_bytes):  # erased meanwhile: drop the upload
            await self._storage.delete(archive_key(job.call_id))
            return Archived(job.call_id, raw_bytes, 0)
        for segment in job.segments:
            try:
                await self._storage.delete(segment.key)
            except StorageError as exc:  # harmless leftovers: erasure removes the call's folder
                log.warning("raw segment not deleted after archiving", call_id=job.call_id, error=str(exc))
        log.info("recording archived", call_id=job.call_id, raw_bytes=raw_bytes, flac_bytes=stored_bytes)
        return Archived(job.call_id, raw_bytes, stored_bytes)

    async def _encode(self, job: _Job, path: Path) -> str:
        """Write the segments' PCM into ``path`` as FLAC; the SHA-256 of the PCM read."""
        digest = hashlib.sha256()
        comment = json.dumps({"callId": job.call_id, "sha256": job.sha256, "gaps": job.gaps}, separators=(",", ":"))
        target = await asyncio.to_thread(
            soundfile.SoundFile,
            path,
            "w",
            samplerate=job.sample_rate,
            channels=job.channels,
            format="FLAC",
            subtype="PCM_16",
        )
        try:
            target.comment = comment  # gaps travel with the archive
            block_bytes = BLOCK_FRAMES * job.channels * SAMPLE_BYTES
            pending = bytearray()
            for segment in job.segments:
                async for chunk in self._storage.read(segment.key, 0, segment.bytes):
                    digest.update(chunk)
                    pending += chunk
                    if len(pending) >= block_bytes:
                        await asyncio.to_thread(_encode_block, target, bytes(pending))
                        pending.clear()
            if pending:
                await asyncio.to_thread(_encode_block, target, bytes(pending))
        finally:
            await asyncio.to_thread(target.close)
        return digest.hexdigest()

    async def _upload(self, path: Path, key: str, size: int) -> None:
        await self._storage.delete(key)  # an upload interrupted earlier would otherwise be appended to
        writer = await self._storage.open_writer(key)
        try:
            with path.open("rb") as source:
                while chunk := await asyncio.to_thread(source.read, UPLOAD_CHUNK_BYTES):
                    await writer.write(chunk)
        finally:
            await writer.close()
        if (stored := await self._storage.size(key)) != size:
            raise ArchiveError(f"the uploaded archive has {stored} bytes, not {size}")

    async def _mark_archived(self, job: _Job, stored_bytes: int) -> bool:
        """Point the recording at its archive; False when it went meanwhile, or its call is being erased
        (the eraser may already have emptied the call's folder: the upload would outlive the erasure)."""
        being_erased = select(Call.id).where(Call.id == job.call_id, Call.erasing_until.is_not(None)).exists()
        async with self._db.write() as session:
            result = await session.execute(
                update(Recording)
                .where(Recording.id == job.recording_id, Recording.format == "pcm", ~being_erased)
                .values(format="flac", stored_bytes=stored_bytes, archiving_until=None)
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def archive_all(self, progress: Callable[[int, int, int, int], None] | None = None) -> tuple[int, int]:
        """Archive every finished PCM recording (the ``switchboard archive`` command).

        ``progress(done, total, raw_bytes, stored_bytes)`` is called after each one. Returns
        ``(archived, failed)``.
        """
        total = await self.pending()
        done = failed = raw = stored = 0
        while True:
            try:
                archived = await self.archive_next()
            except ArchiveError:
                failed += 1
                continue
            if archived is None:
                return done, failed
            done += 1
            raw += archived.raw_bytes
            stored += archived.stored_bytes
            if progress is not None:
                progress(done, max(total, done + failed), raw, stored)
