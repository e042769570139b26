"""Item 3: a storage fault is an outage the session waits out, not the silent end of the recording.

While writes fail, ``/readyz`` is red and audio is held (up to a bound); beyond the bound the oldest is
dropped and becomes a gap; when storage works again the session carries on in a new segment.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from service.listen import writer
from service.recordings.storage import LocalStorage, SegmentWriter
from service.simulator import CallScript, VapiSimulator
from tests.harness import Stack, running_stack

TALK = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=14.0, turns=())


class _FailingWriter:
    def __init__(self, inner: SegmentWriter, storage: FailingStorage) -> None:
        self._inner = inner
        self._storage = storage

    async def write(self, data: bytes) -> None:
        if self._storage.full:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        await self._inner.write(data)

    async def close(self) -> None:
        await self._inner.close()


class FailingStorage(LocalStorage):
    """Real local files, refusing every write while ``full`` (a disk that filled up, on demand)."""

    full = False

    async def open_writer(self, key: str) -> SegmentWriter:
        return _FailingWriter(await super().open_writer(key), self)


async def wait_for_audio(sim: VapiSimulator, call_id: str, at_least: int) -> None:
    async with asyncio.timeout(15):
        while len(sim.audio_sent(call_id)) < at_least:
            await asyncio.sleep(0.01)


async def wait_for_readiness(client: httpx.AsyncClient, status: int) -> dict[str, object]:
    response = await client.get("/readyz")
    try:
        async with asyncio.timeout(10):
            while (response := await client.get("/readyz")).status_code != status:
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"/readyz stayed {response.status_code}: {response.text}") from None
    body: dict[str, object] = response.json()
    return body


def split_by_gaps(stack: Stack, recording: dict[str, object]) -> list[tuple[int, int]]:
    rate = int(recording["sampleRate"]) * int(recording["channels"]) * 2  # type: ignore[call-overload]
    gaps = recording["gaps"]
    assert isinstance(gaps, list)
    return [(round(gap["atSeconds"] * rate), round(gap["durationSeconds"] * rate)) for gap in gaps]


async def test_a_full_disk_is_waited_out_and_what_was_dropped_is_a_gap(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "MAX_PENDING_BYTES", 16 * 1024)  # a short outage overflows the buffer
    monkeypatch.setattr(writer, "OUTAGE_RETRY_SECONDS", (0.1, 0.2))
    storage = FailingStorage(tmp_path / "recordings")
    async with running_stack(database_url, tmp_path, script=TALK, pace=2, storage=storage) as stack:
        call_id = await stack.place_call()
        await wait_for_audio(stack.sim, call_id, 40_000)
        storage.full = True
        red = await wait_for_readiness(stack.client, 503)
        assert red["checks"] == {"database": "ok", "storage": "failed: StorageError"}
        during = len(stack.sim.audio_sent(call_id))
        await wait_for_audio(stack.sim, call_id, during + 300_000)  # well beyond the 16 KiB held
        storage.full = False
        await wait_for_readiness(stack.client, 200)
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        recording = await stack.wait_for_recording(call_id)

        sent = stack.sim.audio_sent(call_id)
        assert len(stack.sim.audio_sent_per_connection(call_id)) == 1, "one connection: the gap is storage's"
        assert recording["status"] == "partial"
        assert [gap["reason"] for gap in recording["gaps"]] == ["storage failed (audio dropped)"]
        [(at, length)] = split_by_gaps(stack, recording)
        assert length >= 100_000, "most of what arrived during the outage (less what was held) was dropped"
        assert await stack.pcm(call_id) == sent[:at] + sent[at + length :], "before and after the gap, in order"
        events = await stack.events(call_id)
        outage = [e for e in events if e["type"].startswith("listen.storage_")]
        assert [e["type"] for e in outage] == ["listen.storage_failed", "listen.storage_resumed"]
        assert "No space left on device" in outage[0]["payload"]["error"]
        assert outage[1]["payload"]["droppedBytes"] == length
        assert "listen.failed" not in [e["type"] for e in events]


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs (needs root and mount permission, else the test is skipped)."""
    root = tmp_path / "tmpfs"
    root.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(root)],  # noqa: S607
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(root)], check=False)  # noqa: S607


async def test_a_real_full_tmpfs_turns_readiness_red_and_loses_nothing_once_space_returns(
    database_url: str, tmp_path: Path, small_tmpfs: Path
) -> None:
    filler = small_tmpfs / "filler"
    filler.write_bytes(b"\0" * (1024 * 1024 - 96 * 1024))  # about 96 KiB left for the recording
    with pytest.raises(OSError, match="No space left"):
        (small_tmpfs / "probe").write_bytes(b"\0" * 1024 * 1024)
    (small_tmpfs / "probe").unlink()
    storage = LocalStorage(small_tmpfs / "recordings")
    # Only the live recording on the small disk: no copy of Vapi's recording beside it.
    async with running_stack(
        database_url, tmp_path, script=TALK, pace=2, storage=storage, vapi_recording_copy=False
    ) as stack:
        call_id = await stack.place_call()
        await wait_for_readiness(stack.client, 503)  # the disk filled up mid-call
        await asyncio.sleep(0.5)
        filler.unlink()  # the operator frees space
        await wait_for_readiness(stack.client, 200)
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        recording = await stack.wait_for_recording(call_id)
        assert recording["status"] == "completed", recording
        assert await stack.pcm(call_id) == stack.sim.audio_sent(call_id), "held while full, stored once space returned"
