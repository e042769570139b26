"""``recording.wav?fill=vapi``: the live recording with its gaps filled from Switchboard's copy of Vapi's
stereo recording (``vapi_copy``), where the formats line up (16-bit PCM WAV, same rate and channels).

Alignment is per segment (one per listen connection): a segment's first stretch of sound
(:data:`PROBE_BYTES`, not silence) is looked up byte for byte in Vapi's audio, around where the live
timeline (whose gaps are estimated from the clock) puts it; it must be found exactly once, on a sample
frame. The filled WAV is then Vapi's timeline from the first segment's start: each live segment at the
place found, what lies between read from Vapi's copy. Audio re-encoded between the two copies does not
match byte for byte: then there is no fill (409), never a guess.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from service.recordings.audio import SAMPLE_BYTES, Piece

PROBE_BYTES = 5120  # 80 ms of 16 kHz stereo
SEARCH_SECONDS = 120


@dataclass(frozen=True, slots=True)
class WavFormat:
    sample_rate: int
    channels: int
    bits: int
    data_offset: int
    data_bytes: int


def parse_wav_header(head: bytes, *, total: int) -> WavFormat | None:
    """The format and data chunk of a PCM WAV from its first bytes (``total``: the file's size); None
    when it is not a PCM WAV whose data chunk starts within ``head``."""
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    position, fmt = 12, None
    while position + 8 <= len(head):
        chunk, size = head[position : position + 4], struct.unpack_from("<I", head, position + 4)[0]
        body = position + 8
        if chunk == b"fmt " and body + 16 <= len(head):
            audio_format, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", head, body)
            fmt = (audio_format, channels, rate, bits)
        elif chunk == b"data":
            if fmt is None or fmt[0] != 1:
                return None
            return WavFormat(fmt[2], fmt[1], fmt[3], body, min(size, total - body))
        position = body + size + (size & 1)
    return None


def probe(segment: bytes, *, block: int) -> tuple[int, bytes] | None:
    """The first :data:`PROBE_BYTES` of sound in ``segment`` (its offset, on a sample frame), if any."""
    step = PROBE_BYTES
    for start in range(0, len(segment) - step + 1, step):
        window = segment[start : start + step]
        if any(window):
            return start - start % block, window
    return None


def find_alignment(vapi_audio: bytes, found: tuple[int, bytes], *, probe_at: int, block: int) -> int | None:
    """The byte of Vapi's audio that byte 0 of the live timeline is: ``found`` (offset in the live
    timeline ``probe_at`` + its offset in the segment, and the bytes) must occur exactly once."""
    offset, window = found
    position = vapi_audio.find(window)
    if position < 0 or position % block or vapi_audio.find(window, position + 1) >= 0:
        return None
    return position - (probe_at + offset)


@dataclass(frozen=True, slots=True)
class Placed:
    """A live segment (``key``, ``length`` bytes) found at byte ``at`` of Vapi's audio."""

    key: str
    length: int
    at: int


def stitched_pieces(segments: Sequence[Placed], *, key: str, data_offset: int) -> list[Piece]:
    """The filled timeline (pure): the segments in Vapi's order from the first one's place, what lies
    between two read from Vapi's copy (``key``, audio from ``data_offset``); an overlap is not repeated."""
    pieces: list[Piece] = []
    position: int | None = None  # where in Vapi's audio the output has reached
    for segment in sorted(segments, key=lambda placed: placed.at):
        skip = 0
        if position is not None and segment.at > position:
            pieces.append(Piece(segment.at - position, key, data_offset + position))
        elif position is not None:
            skip = position - segment.at
        if segment.length > skip:
            pieces.append(Piece(segment.length - skip, segment.key, skip))
        position = max(position or 0, segment.at + segment.length)
    return pieces


def lines_up(fmt: WavFormat, *, sample_rate: int, channels: int) -> bool:
    """Whether Vapi's copy can fill the live recording's gaps sample for sample."""
    return (fmt.sample_rate, fmt.channels, fmt.bits) == (sample_rate, channels, SAMPLE_BYTES * 8)
