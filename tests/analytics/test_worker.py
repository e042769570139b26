"""The analytics queue and worker against a real database and real files (no network): queued in the
finalising transaction, leased, analysed once, failures kept apart from retries, a lost lease fenced."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from service.analytics.worker import AnalyticsWorker
from service.calls.announce import CallAnnouncer
from service.calls.changes import CallChanges
from service.calls.writer import CallWriter
from service.db.engine import Database
from service.db.models import Call, CallAnalytics, WebhookDelivery, WebhookEndpoint, utcnow
from service.metrics import Metrics
from service.recordings.analysis_queue import queue_analysis
from service.recordings.service import RecordingService
from service.recordings.storage import LocalStorage
from service.simulator.audio import FrameSource, call_tag


@dataclass
class Parts:
    db: Database
    storage: LocalStorage
    recordings: RecordingService

    def worker(self, **options: Any) -> AnalyticsWorker:
        return AnalyticsWorker(self.db, self.recordings, self.storage, Metrics(), self.writer, **options)

    @property
    def writer(self) -> CallWriter:
        """The call writer, with the outbox's subscriber (``call.analyzed`` webhooks) as in the app."""
        changes = CallChanges()
        changes.subscribe(CallAnnouncer())
        return CallWriter(self.db, changes)

    async def record(self, call_id: str, spans: list[tuple[bool, bool, float]], *, channels: int = 2) -> None:
        """A finalised recording of ``(customer talks, assistant talks, seconds)`` spans."""
        async with self.db.write() as session:
            session.add(Call(id=call_id, status="ended", customer={}, call_metadata={}))
        segment = await self.recordings.open_segment(
            call_id, sample_rate=16_000, channels=channels, gap_seconds=None, gap_reason="test"
        )
        frames, tag, index = FrameSource(), call_tag(call_id), 0
        pcm = bytearray()
        for user, assistant, seconds in spans:
            for _ in range(round(seconds / 0.02)):
                frame = frames.frame(tag, index, user=user, assistant=assistant)
                pcm += frame if channels == 2 else frame[::2][: len(frame) // 2]
                index += 1
        writer = await self.storage.open_writer(segment.key)
        await writer.write(bytes(pcm))
        await writer.close()
        await self.recordings.close_segment(segment, size=len(pcm), sha256=hashlib.sha256(pcm).hexdigest())
        await self.recordings.finalize(call_id)

    async def analytics(self, call_id: str) -> CallAnalytics:
        async with self.db.read() as session:
            row = await session.scalar(select(CallAnalytics).where(CallAnalytics.call_id == call_id))
        assert row is not None
        return row


@pytest.fixture
async def parts(database_url: str, tmp_path: Path) -> AsyncIterator[Parts]:
    db = Database(database_url)
    storage = LocalStorage(tmp_path)
    yield Parts(db, storage, RecordingService(db, storage))
    await db.dispose()


async def test_a_finalised_recording_is_queued_then_analysed_once(parts: Parts) -> None:
    await parts.record("call-1", [(True, False, 1.0), (False, False, 2.0), (False, True, 1.0), (True, True, 0.5)])
    assert (await parts.analytics("call-1")).status == "pending", "queued by the finalising transaction"

    worker = parts.worker()
    assert await worker.run_once()
    assert not await worker.run_once(), "nothing left"
    row = await parts.analytics("call-1")
    assert row.status == "completed"
    assert row.customer_talk_seconds == pytest.approx(1.5, abs=0.3)
    assert row.assistant_talk_seconds == pytest.approx(1.5, abs=0.3)
    assert row.overlap_seconds == pytest.approx(0.5, abs=0.3)
    assert row.longest_silence_seconds == pytest.approx(2.0, abs=0.3)
    assert row.customer_interruptions == 1
    assert row.assistant_interruptions == 0
    assert row.analyzed_seconds == pytest.approx(4.5, abs=0.05)
    assert row.attempts == 1
    assert row.lease_until is None

    await parts.recordings.finalize("call-1")  # finalised again (a resumed recording): measured again
    assert (await parts.analytics("call-1")).status == "pending"


async def test_unanalysable_recordings_fail_with_a_reason(parts: Parts) -> None:
    await parts.record("mono", [(True, False, 1.0)], channels=1)
    async with parts.db.write() as session:
        session.add(Call(id="silent", status="ended", customer={}, call_metadata={}))
    await parts.recordings.open_segment("silent", sample_rate=16_000, channels=2, gap_seconds=None, gap_reason="x")
    await parts.recordings.finalize("silent", error="could not connect")

    assert (await parts.analytics("silent")).status == "failed", "no audio: failed at once"
    assert await parts.worker().run_once()
    row = await parts.analytics("mono")
    assert row.status == "failed"
    assert "mono" in (row.error or "")


async def test_a_run_whose_lease_ran_out_cannot_overwrite_the_next(parts: Parts) -> None:
    """Also: only the stored run announces ``call.analyzed`` to outbound webhook endpoints."""
    async with parts.db.write() as session:
        session.add(WebhookEndpoint(url="https://ops.example.com/hooks", events=["call.analyzed"], secret="whsec_x"))
    await parts.record("call-1", [(True, False, 1.0)])
    now = utcnow()
    first = parts.worker(clock=lambda: now)
    second = parts.worker(clock=lambda: now + dt.timedelta(minutes=11))  # after the 10-minute lease
    stale = await first.claim()
    assert stale is not None
    assert await first.claim() is None, "leased"
    fresh = await second.claim()
    assert fresh is not None
    assert fresh.attempts == stale.attempts + 1

    await first.analyze(stale)  # finishes late: its result is refused
    assert (await parts.analytics("call-1")).status == "pending"
    await second.analyze(fresh)
    assert (await parts.analytics("call-1")).status == "completed"
    async with parts.db.read() as session:
        announced = (await session.scalars(select(WebhookDelivery))).all()
    assert [delivery.event_type for delivery in announced] == ["call.analyzed"]
    assert announced[0].call_id == "call-1", "erasing the call deletes its pending deliveries"
    data = announced[0].payload["data"]
    assert data["callId"] == "call-1"
    assert data["status"] == "completed"
    assert data["customer"]["talkSeconds"] == pytest.approx(1.0, abs=0.3)
    assert set(data) >= {"overlapSeconds", "longestSilenceSeconds", "interruptions", "talkRatio"}


async def test_a_run_of_a_recording_queued_again_cannot_overwrite_the_new_run(parts: Parts) -> None:
    """Queued again (a takeover resumed and finalised the recording anew), ``attempts`` starts over: the
    old run's claim must not match the new one's although both are the first attempt."""
    await parts.record("call-1", [(True, False, 1.0)])
    now = utcnow()
    old = await parts.worker(clock=lambda: now).claim()
    assert old is not None
    async with parts.db.write() as session:
        await queue_analysis(session, "call-1", recording_status="completed")
    new = await parts.worker(clock=lambda: now + dt.timedelta(seconds=1)).claim()
    assert new is not None
    assert new.attempts == old.attempts == 1
    await parts.worker().analyze(old)  # the old run finishes after the new one claimed
    row = await parts.analytics("call-1")
    assert (row.status, row.attempts, row.lease_until) == ("pending", 1, new.lease_until), "the old run stored nothing"
    await parts.worker().analyze(new)
    assert (await parts.analytics("call-1")).status == "completed"


class UnreadableStorage(LocalStorage):
    """Storage that is away (an S3 outage, a full disk) when reading."""

    async def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        if key:  # always: the yield below only makes this an async generator, like the real one
            raise OSError("storage unavailable")
        yield b""


async def test_errors_are_retried_then_given_up(parts: Parts) -> None:
    await parts.record("call-1", [(True, False, 1.0)])
    away = UnreadableStorage(parts.storage.root)
    now = [utcnow()]
    worker = AnalyticsWorker(
        parts.db, RecordingService(parts.db, away), away, Metrics(), parts.writer, clock=lambda: now[0], max_attempts=2
    )
    assert await worker.run_once()
    row = await parts.analytics("call-1")
    assert (row.status, row.attempts) == ("pending", 1)
    assert "storage unavailable" in (row.error or "")
    assert not await worker.run_once(), "waits before retrying"
    now[0] += dt.timedelta(minutes=2)
    assert await worker.run_once()
    row = await parts.analytics("call-1")
    assert (row.status, row.attempts) == ("failed", 2)
