"""Voice activity over a stored recording: however storage cuts the audio into chunks, every frame is
classified once, in order, a bounded block at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.analytics.detector import ChannelDetector, detect
from service.recordings.audio import Piece
from service.simulator.audio import FrameSource, call_tag


class ChunkedStorage:
    """One stored segment, read back in chunks of the given sizes (the last one repeated)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data = data
        self.sizes = sizes

    async def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        position, index = start, 0
        while position < end:
            size = self.sizes[min(index, len(self.sizes) - 1)]
            yield self.data[position : min(position + size, end)]
            position += size
            index += 1


def speech(seconds: float) -> bytes:
    """Stereo 16 kHz audio of the simulator: both voices taking turns, with silences."""
    frames, tag = FrameSource(), call_tag("detector-test")
    count = round(seconds / 0.02)
    return b"".join(frames.frame(tag, n, user=(n // 40) % 3 == 0, assistant=(n // 55) % 2 == 1) for n in range(count))


@pytest.mark.parametrize("sizes", [[262_144], [1000, 333, 70_001], [5], [1280 * 3]])
async def test_chunks_cut_anywhere_give_the_decisions_of_the_whole(
    sizes: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    pcm = speech(12.0)
    detector = ChannelDetector(sample_rate=16_000, channels=2, mode=2)
    whole = ChannelDetector(sample_rate=16_000, channels=2, mode=2).classify(pcm)
    handed: list[int] = []
    classify = detector.classify

    def counting(block: bytes | memoryview) -> tuple[list[bool], list[bool]]:
        handed.append(len(block))
        return classify(block)

    monkeypatch.setattr(detector, "classify", counting)
    pieces = [
        Piece(len(pcm) // 2, "segment"),
        Piece(3 * 1280),
        Piece(len(pcm) - len(pcm) // 2, "segment", len(pcm) // 2),
    ]
    customer, assistant = await detect(ChunkedStorage(pcm, sizes), pieces, detector)  # type: ignore[arg-type]
    gap = [None] * 3
    assert customer == whole[0][:300] + gap + whole[0][300:]
    assert assistant == whole[1][:300] + gap + whole[1][300:]
    assert max(handed) <= 64_000, "at most a second of audio at a time, whatever the chunks"
