"""What erasure and the archive need from every storage backend: listing a call's objects, deleting
them (never a neighbour's), reading one as a seekable file."""

from __future__ import annotations

import asyncio
import io

import pytest

from service.recordings.storage import RecordingStorage
from tests.recordings.conftest import storage  # noqa: F401 - the three backends (file, memory, s3)


async def _put(store: RecordingStorage, key: str, *pieces: bytes) -> None:
    writer = await store.open_writer(key)
    for piece in pieces:
        await writer.write(piece)
    await writer.close()


async def test_a_prefix_is_deleted_without_touching_its_neighbours(storage: RecordingStorage) -> None:  # noqa: F811
    await _put(storage, "call-1/0000.pcm", b"a" * 10, b"b" * 10)
    await _put(storage, "call-1/recording.flac", b"fLaC")
    await _put(storage, "call-10/0000.pcm", b"c" * 10)
    await _put(storage, "call-1x/0000.pcm", b"d" * 10)
    assert await storage.keys("call-1"), "the call's objects are listed"
    assert all(key.startswith("call-1/") for key in await storage.keys("call-1"))
    assert await storage.delete_prefix("call-1") >= 2
    assert await storage.keys("call-1") == []
    assert await storage.size("call-1/0000.pcm") == 0
    assert await storage.size("call-10/0000.pcm") == 10, "call-10 is not under call-1"
    assert await storage.size("call-1x/0000.pcm") == 10
    assert await storage.delete_prefix("call-1") == 0, "deleting nothing is fine"
    await storage.delete("call-10/0000.pcm")
    assert await storage.size("call-10/0000.pcm") == 0
    with pytest.raises(ValueError, match="invalid storage key"):
        await storage.delete_prefix("..")


async def test_an_object_reads_as_a_seekable_file(storage: RecordingStorage) -> None:  # noqa: F811
    data = bytes(range(256)) * 40
    await _put(storage, "call-2/recording.flac", data[:3000], data[3000:7000], data[7000:])
    handle = await asyncio.to_thread(storage.open_file, "call-2/recording.flac")
    try:
        assert handle.read(5) == data[:5]
        handle.seek(2998)
        assert handle.read(10) == data[2998:3008], "a read across two chunks"
        handle.seek(-4, io.SEEK_END)
        assert handle.read() == data[-4:]
        assert handle.tell() == len(data)
    finally:
        handle.close()
