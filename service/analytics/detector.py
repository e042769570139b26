"""Voice activity over a recording's two channels with WebRTC's detector (``webrtcvad-wheels``).

The recording is read piece by piece as the WAV download lays it out (stored audio and gaps) and
classified in a worker thread (the detector is C code that holds the GIL for microseconds per frame: a
call hour costs about a second of CPU), a block of at most a second at a time, sliced out of the chunk
storage returned without copying it. Memory stays flat whatever the call's length, and small: when a
burst of calls ends, their analyses must not grow the process by more than the calls' sessions gave
back (blocks of ten seconds, copied twice from an accumulating buffer, held about 3 MB per analysis).
Gaps become ``None`` decisions: neither talk nor silence.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import webrtcvad

from service.analytics.activity import FRAME_SECONDS, Decision
from service.recordings.audio import SAMPLE_BYTES, Piece, extract_channel
from service.recordings.storage import RecordingStorage

SUPPORTED_RATES = (8000, 16000, 32000, 48000)
BLOCK_SECONDS = 1.0  # 64 KB of 16 kHz stereo per hand-off to the worker thread
CUSTOMER, ASSISTANT = 0, 1  # channels, as the recording downloads name them


class UnsupportedAudioError(ValueError):
    """The recording's format cannot be analysed (one channel, or a rate the detector lacks)."""


class ChannelDetector:
    """One detector per channel, fed whole 20 ms frames of interleaved s16le, in order."""

    def __init__(self, *, sample_rate: int, channels: int, mode: int) -> None:
        if channels < 2:
            raise UnsupportedAudioError("a mono recording does not tell the customer from the assistant")
        if sample_rate not in SUPPORTED_RATES:
            raise UnsupportedAudioError(f"the detector takes 8, 16, 32 or 48 kHz audio, not {sample_rate} Hz")
        self.sample_rate, self.channels = sample_rate, channels
        self.mono_frame = round(sample_rate * FRAME_SECONDS) * SAMPLE_BYTES
        self.frame = self.mono_frame * channels
        self._vads = (webrtcvad.Vad(mode), webrtcvad.Vad(mode))

    def classify(self, pcm: bytes | memoryview) -> tuple[list[bool], list[bool]]:
        """Decisions for each whole frame of ``pcm`` (its length a multiple of :attr:`frame`)."""
        decisions: tuple[list[bool], list[bool]] = ([], [])
        for channel in (CUSTOMER, ASSISTANT):
            mono = extract_channel(pcm, channel, self.channels)
            vad, out = self._vads[channel], decisions[channel]
            for start in range(0, len(mono) - self.mono_frame + 1, self.mono_frame):
                out.append(vad.is_speech(mono[start : start + self.mono_frame], self.sample_rate))
        return decisions


async def detect(
    storage: RecordingStorage, pieces: Sequence[Piece], detector: ChannelDetector
) -> tuple[list[Decision], list[Decision]]:
    """Per-frame decisions of both channels over ``pieces`` (a stereo WAV timeline, gaps filled)."""
    customer: list[Decision] = []
    assistant: list[Decision] = []
    frame = detector.frame
    block = round(BLOCK_SECONDS / FRAME_SECONDS) * frame

    async def classify(pcm: bytes | memoryview) -> None:
        found = await asyncio.to_thread(detector.classify, pcm)
        customer.extend(found[CUSTOMER])
        assistant.extend(found[ASSISTANT])

    for piece in pieces:
        if piece.key is None:
            lost = round(piece.length / frame)
            customer += [None] * lost
            assistant += [None] * lost
            continue
        torn = b""  # the start of a frame that a chunk cut: completed by the next chunk
        async for chunk in storage.read(piece.key, piece.offset, piece.offset + piece.length):
            view = memoryview(chunk)
            if torn:
                need = frame - len(torn)
                torn += view[:need]
                view = view[need:]
                if len(torn) < frame:
                    continue
                await classify(torn)
            whole = len(view) - len(view) % frame
            for start in range(0, whole, block):
                await classify(view[start : min(start + block, whole)])
            torn = bytes(view[whole:])  # a torn last frame of the piece is left out
    return customer, assistant
