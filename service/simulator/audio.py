"""Synthetic listen-socket audio: 20 ms frames of 16 kHz stereo s16le PCM, cheap and deterministic.

A frame is a pure function of (call tag, frame index, who is speaking). The bulk of every frame is one of a
few precomputed base frames; the first 32 bytes carry the frame index and the call's tag, so that every frame
of every call is distinct and loss or reordering shows. The stamp is sixteen samples of four bits each
(at most 15 of 32,767: inaudible), so that a channel nobody speaks on stays silent to a voice activity
detector (a full-scale stamp clicked 50 times a second). Building a frame is a table lookup per stamp
byte and one bytes concatenation.
"""

from __future__ import annotations

import math
import random
import struct
import zlib
from array import array

SAMPLE_RATE = 16_000
CHANNELS = 2
SAMPLE_WIDTH = 2
FRAME_SECONDS = 0.02
SAMPLES_PER_FRAME = int(SAMPLE_RATE * FRAME_SECONDS)  # 320 per channel
FRAME_BYTES = SAMPLES_PER_FRAME * CHANNELS * SAMPLE_WIDTH  # 1,280

STAMP = struct.Struct("<II")
"""Frame index (mod 2**32) and call tag, stamped over the first eight stereo samples of each frame, one
nibble per sample (low nibble first)."""
STAMP_BYTES = STAMP.size * 2 * SAMPLE_WIDTH  # two samples per stamp byte: 32
_NIBBLES = struct.Struct("<16h")
# Each stamp byte as its two samples: (low nibble, high nibble).
_SAMPLES_OF_BYTE = [struct.pack("<hh", byte & 0xF, byte >> 4) for byte in range(256)]

VARIANTS = 50
"""Base frames per kind: one second of distinct audio, so the tone is continuous across frames."""

TONE_HZ = 440.0  # 440 cycles in one second: the tone loops seamlessly every VARIANTS frames
TONE_AMPLITUDE = 6_000
SPEECH_AMPLITUDE = 4_000


def call_tag(call_id: str) -> int:
    """The 32-bit tag stamped into a call's frames."""
    return zlib.crc32(call_id.encode())


def interleave(left: bytes, right: bytes) -> bytes:
    """Interleave two mono s16le buffers of equal length into one stereo buffer (left = channel 0)."""
    if len(left) != len(right) or len(left) % SAMPLE_WIDTH:
        raise ValueError("channels must be s16le buffers of equal length")
    out = bytearray(len(left) * 2)
    out[0::4] = left[0::2]
    out[1::4] = left[1::2]
    out[2::4] = right[0::2]
    out[3::4] = right[1::2]
    return bytes(out)


def split_channels(pcm: bytes) -> tuple[bytes, bytes]:
    """Split interleaved stereo s16le into (channel 0, channel 1) mono buffers."""
    if len(pcm) % (CHANNELS * SAMPLE_WIDTH):
        raise ValueError("not whole stereo samples")
    left = bytearray(len(pcm) // 2)
    right = bytearray(len(pcm) // 2)
    left[0::2] = pcm[0::4]
    left[1::2] = pcm[1::4]
    right[0::2] = pcm[2::4]
    right[1::2] = pcm[3::4]
    return bytes(left), bytes(right)


def stamp(index: int, tag: int) -> bytes:
    """The first :data:`STAMP_BYTES` of frame ``index`` of the call tagged ``tag``."""
    return b"".join([_SAMPLES_OF_BYTE[byte] for byte in STAMP.pack(index & 0xFFFFFFFF, tag)])


def read_stamp(frame: bytes) -> tuple[int, int]:
    """(frame index, call tag) stamped into a frame."""
    nibbles = _NIBBLES.unpack_from(frame)
    packed = bytes((nibbles[2 * k] & 0xF) | (nibbles[2 * k + 1] & 0xF) << 4 for k in range(STAMP.size))
    index, tag = STAMP.unpack(packed)
    return index, tag


def _speech_noise(rng: random.Random, samples: int) -> bytes:
    # Noise under a slow "syllable" envelope: audible as speech-like, clearly not silence.
    values = array("h")
    for i in range(samples):
        envelope = 0.55 + 0.45 * math.sin(2 * math.pi * 4.0 * i / SAMPLE_RATE)
        values.append(int(rng.uniform(-1.0, 1.0) * SPEECH_AMPLITUDE * envelope))
    return _little_endian(values)


def _tone(samples: int) -> bytes:
    values = array(
        "h", (int(TONE_AMPLITUDE * math.sin(2 * math.pi * TONE_HZ * i / SAMPLE_RATE)) for i in range(samples))
    )
    return _little_endian(values)


def _little_endian(values: array[int]) -> bytes:
    if struct.pack("=h", 1) != struct.pack("<h", 1):  # pragma: no cover - big-endian hosts
        values.byteswap()
    return values.tobytes()


class FrameSource:
    """Precomputed base frames for the four (customer speaking, assistant speaking) combinations."""

    __slots__ = ("_tails",)

    def __init__(self, seed: int = 0) -> None:
        mono_bytes = SAMPLES_PER_FRAME * SAMPLE_WIDTH
        total = SAMPLES_PER_FRAME * VARIANTS
        speech = _speech_noise(random.Random(seed), total)  # noqa: S311 - test audio, not cryptography
        tone = _tone(total)
        silence = bytes(mono_bytes)
        tails: list[list[bytes]] = [[], [], [], []]
        for k in range(VARIANTS):
            part = slice(k * mono_bytes, (k + 1) * mono_bytes)
            customer = (silence, speech[part])
            assistant = (silence, tone[part])
            for user_speaking in (0, 1):
                for assistant_speaking in (0, 1):
                    frame = interleave(customer[user_speaking], assistant[assistant_speaking])
                    tails[user_speaking * 2 + assistant_speaking].append(frame[STAMP_BYTES:])
        self._tails = tails

    def frame(self, tag: int, index: int, *, user: bool, assistant: bool) -> bytes:
        """Frame ``index`` of the call tagged ``tag``: 1,280 bytes."""
        tail = self._tails[user * 2 + assistant][index % VARIANTS]
        return stamp(index, tag) + tail
