import io
import struct
import wave

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.recordings.audio import (
    Piece,
    RangeNotSatisfiableError,
    SegmentExtent,
    extract_channel,
    parse_range,
    stream_timeline,
    timeline,
    wav_header,
)
from service.recordings.storage import RecordingStorage, build_storage


def test_wav_header_parses_with_the_wave_module() -> None:
    frames = struct.pack("<8h", *range(8))  # 4 stereo frames
    with wave.open(io.BytesIO(wav_header(len(frames), sample_rate=16000, channels=2) + frames)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate(), wav.getnframes()) == (2, 2, 16000, 4)
        assert wav.readframes(4) == frames


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 10)),
        ("bytes=10-", (10, 100)),
        ("bytes=-5", (95, 100)),
        ("bytes=90-200", (90, 100)),
        ("bytes=0-0", (0, 1)),
        ("items=0-1", None),
        ("bytes=0-1,5-6", None),
        ("bytes=abc", None),
        ("bytes=5-2", None),
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=150-160", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiableError):
        parse_range(header, 100)


def test_extract_channel() -> None:
    stereo = struct.pack("<6h", 1, -1, 2, -2, 3, -3)
    assert extract_channel(stereo, 0, 2) == struct.pack("<3h", 1, 2, 3)
    assert extract_channel(stereo, 1, 2) == struct.pack("<3h", -1, -2, -3)


def test_timeline_fills_gaps_only_when_asked() -> None:
    segments = [SegmentExtent("a", 8), SegmentExtent("b", 12, gap_before_bytes=16)]
    assert timeline(segments, channels=2, fill_gaps=False, mono=False) == [Piece(8, "a"), Piece(12, "b")]
    assert timeline(segments, channels=2, fill_gaps=True, mono=False) == [Piece(8, "a"), Piece(16), Piece(12, "b")]
    assert timeline(segments, channels=2, fill_gaps=True, mono=True) == [Piece(4, "a"), Piece(8), Piece(6, "b")]


async def _collect(storage: RecordingStorage, pieces: list[Piece], start: int, end: int, channel: int | None) -> bytes:
    return b"".join([chunk async for chunk in stream_timeline(storage, pieces, start, end, channel=channel)])


@given(
    first=st.binary(min_size=0, max_size=64).map(lambda b: b[: len(b) - len(b) % 4]),
    second=st.binary(min_size=0, max_size=64).map(lambda b: b[: len(b) - len(b) % 4]),
    gap_frames=st.integers(0, 5),
    channel=st.sampled_from([None, 0, 1]),
    data=st.data(),
)
async def test_any_range_of_the_timeline_equals_the_same_slice_of_the_whole(
    first: bytes, second: bytes, gap_frames: int, channel: int | None, data: st.DataObject
) -> None:
    storage = build_storage("memory://")
    for key, content in (("a", first), ("b", second)):
        writer = await storage.open_writer(key)
        for offset in range(0, len(content), 10):  # several chunk objects, split mid-frame
            await writer.write(content[offset : offset + 10])
    segments = [SegmentExtent("a", len(first)), SegmentExtent("b", len(second), gap_before_bytes=gap_frames * 4)]
    pieces = timeline(segments, channels=2, fill_gaps=True, mono=channel is not None)
    whole_stereo = first + bytes(gap_frames * 4) + second
    whole = whole_stereo if channel is None else extract_channel(whole_stereo, channel, 2)
    total = sum(piece.length for piece in pieces)
    assert total == len(whole)
    start = data.draw(st.integers(0, total))
    end = data.draw(st.integers(start, total))
    try:
        assert await _collect(storage, pieces, start, end, channel) == whole[start:end]
    finally:
        await storage.close()
