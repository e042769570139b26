"""Pure audio arithmetic for downloads: WAV headers, byte ranges, and a recording's timeline.

A recording is a list of stored segments; between them sit gaps (lost audio). Downloads view it as a
*timeline* of pieces — stored bytes or silence — optionally reduced to one channel. Everything here is
I/O-free except :func:`stream_timeline`, which reads stored pieces through a storage backend.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

SAMPLE_BYTES = 2  # pcm_s16le
SILENCE_CHUNK = bytes(64 * 1024)


class AudioSource(Protocol):
    """Where a timeline's stored pieces are read: the storage (raw segments) or a recording's archive."""

    def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        """Bytes ``[start, end)`` of segment ``key``."""
        ...


class RangeNotSatisfiableError(Exception):
    """The ``Range`` header asks for bytes outside the resource."""


def wav_header(data_bytes: int, *, sample_rate: int, channels: int) -> bytes:
    """A canonical 44-byte PCM WAV header for ``data_bytes`` of s16le audio."""
    block_align = channels * SAMPLE_BYTES
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,  # PCM
        channels,
        sample_rate,
        sample_rate * block_align,
        block_align,
        SAMPLE_BYTES * 8,
        b"data",
        data_bytes,
    )


def parse_range(header: str | None, total: int) -> tuple[int, int] | None:
    """Parse a single ``bytes=`` range into ``[start, end)``; ``None`` means the whole resource.

    Multi-range and malformed headers are ignored (the full resource is served, as RFC 9110 allows);
    a syntactically valid range that selects nothing raises :class:`RangeNotSatisfiableError`.
    """
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first == "":
            suffix = int(last)
            if suffix <= 0:
                raise RangeNotSatisfiableError(header)
            return max(0, total - suffix), total
        start = int(first)
        end = total if last == "" else min(int(last) + 1, total)
    except ValueError:
        return None
    if start < 0 or (last != "" and int(last) < start):
        return None
    if start >= total:
        raise RangeNotSatisfiableError(header)
    return start, end


@dataclass(frozen=True, slots=True)
class Piece:
    """``length`` bytes of the output: a stored segment (``key``, from output byte ``offset`` of it) or
    silence (``key is None``)."""

    length: int
    key: str | None = None
    offset: int = 0  # where in ``key`` the piece starts (a gap filled from Vapi's copy: recordings.fill)


def stretch(pieces: Sequence[Piece], start: int, end: int) -> list[Piece]:
    """The pieces that make output bytes ``[start, end)`` of ``pieces`` (a stretch of a recording)."""
    cut: list[Piece] = []
    position = 0
    for piece in pieces:
        lo, hi = max(start, position), min(end, position + piece.length)
        if lo < hi:
            offset = piece.offset + lo - position if piece.key is not None else 0
            cut.append(Piece(hi - lo, piece.key, offset))
        position += piece.length
    return cut


@dataclass(frozen=True, slots=True)
class SegmentExtent:
    key: str
    bytes: int
    gap_before_bytes: int = 0


def timeline(segments: Sequence[SegmentExtent], *, channels: int, fill_gaps: bool, mono: bool) -> list[Piece]:
    """The pieces of a download, in order. With ``mono``, lengths count one channel's bytes."""
    frame = channels * SAMPLE_BYTES
    divisor = channels if mono else 1
    pieces: list[Piece] = []
    for segment in segments:
        if fill_gaps and segment.gap_before_bytes:
            gap = segment.gap_before_bytes - segment.gap_before_bytes % frame
            if gap:
                pieces.append(Piece(gap // divisor))
        usable = segment.bytes - segment.bytes % frame if mono else segment.bytes
        if usable:
            pieces.append(Piece(usable // divisor, segment.key))
    return pieces


def extract_channel(stereo: bytes | memoryview, channel: int, channels: int) -> bytes:
    """One channel of interleaved s16le frames (``stereo`` holds whole frames)."""
    return memoryview(stereo).cast("h")[channel::channels].tobytes()


async def _stored_range(
    storage: AudioSource, key: str, start: int, end: int, channel: int | None, channels: int
) -> AsyncIterator[bytes]:
    if channel is None:
        async for chunk in storage.read(key, start, end):
            yield chunk
        return
    # Output bytes [start, end) of one channel map to whole source frames.
    frame = channels * SAMPLE_BYTES
    first_frame, skip = divmod(start, SAMPLE_BYTES)
    last_frame = -(-end // SAMPLE_BYTES)
    wanted = end - start
    carry = b""
    async for chunk in storage.read(key, first_frame * frame, last_frame * frame):
        data = carry + chunk
        whole = len(data) - len(data) % frame
        carry = data[whole:]
        mono = extract_channel(data[:whole], channel, channels)
        if skip:
            # The start may fall inside a sample; chunks may hold no whole frame yet.
            cut = min(skip, len(mono))
            mono, skip = mono[cut:], skip - cut
        mono = mono[:wanted]
        wanted -= len(mono)
        if mono:
            yield mono
        if wanted <= 0:
            return


async def stream_timeline(
    storage: AudioSource,
    pieces: Sequence[Piece],
    start: int,
    end: int,
    *,
    channel: int | None = None,
    channels: int = 2,
) -> AsyncIterator[bytes]:
    """Stream output bytes ``[start, end)`` of ``pieces`` without loading any piece whole."""
    offset = 0
    for piece in pieces:
        piece_start, piece_end = offset, offset + piece.length
        offset = piece_end
        lo, hi = max(start, piece_start), min(end, piece_end)
        if lo >= hi:
            continue
        if piece.key is None:
            remaining = hi - lo
            while remaining:
                chunk = SILENCE_CHUNK[: min(remaining, len(SILENCE_CHUNK))]
                remaining -= len(chunk)
                yield chunk
            continue
        first, last = piece.offset + lo - piece_start, piece.offset + hi - piece_start
        async for chunk in _stored_range(storage, piece.key, first, last, channel, channels):
            yield chunk
