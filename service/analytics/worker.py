"""The analytics worker: measures each finalised recording once, in the background.

Owned by the app's lifespan (``start()`` / ``close(timeout)``) like the delivery worker: one task
that looks for pending rows every ``poll_interval`` seconds and analyses one recording at a time (the
work is CPU: two cores serve the whole service). Replicas share the queue: a row is claimed with a
lease and its ``attempts`` bumped in one short write transaction (``FOR UPDATE SKIP LOCKED`` on
PostgreSQL); the result is written only if ``attempts`` and ``lease_until`` are still the claim's, so a
replica whose lease ran out never overwrites a newer run, nor a run of the recording queued again
(which starts ``attempts`` over). A run that fails is retried after ``retry_after``, and
marked ``failed`` after ``max_attempts``; a process killed mid-run leaves the lease to expire.

A completed result is also a call change: the transaction that stores it is a call writer's unit that
appends ``call.analyzed`` to the call's timeline (:mod:`service.calls.writer`), so the
``call.analyzed`` outbound webhook (the announcer) and the rules' ``call.analyzed`` milestone (the rule
engine's firing rows) commit with the result or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
import structlog
from sqlalchemy import ColumnElement, and_, or_, select, update

from service.analytics.activity import Conversation, conversation
from service.analytics.detector import ChannelDetector, UnsupportedAudioError, detect
from service.calls.analytics import AnalyticsOut, ChannelTalk, Interruptions
from service.calls.events import NewEvent
from service.calls.writer import CallWriter
from service.db.engine import Database
from service.db.models import CallAnalytics, utcnow
from service.errors import NotFoundError
from service.metrics import Metrics
from service.recordings.analysis_queue import NO_AUDIO
from service.recordings.audio import timeline
from service.recordings.service import RecordingService
from service.recordings.storage import RecordingStorage
from service.tasks import TaskOwner

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Claim:
    call_id: str
    attempts: int
    lease_until: dt.datetime  # with ``attempts``, the fencing token of this claim


class AnalyticsWorker:
    """Analyses pending recordings until closed. Construct once per app; ``start()`` in the lifespan."""

    def __init__(
        self,
        db: Database,
        recordings: RecordingService,
        storage: RecordingStorage,
        metrics: Metrics,
        writer: CallWriter,
        *,
        mode: int = 2,
        poll_interval: float = 2.0,
        lease: dt.timedelta = dt.timedelta(minutes=10),
        retry_after: dt.timedelta = dt.timedelta(minutes=1),
        max_attempts: int = 3,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._db = db
        self._recordings = recordings
        self._storage = storage
        self._metrics = metrics
        self._writer = writer
        self._mode = mode
        self._poll_interval = poll_interval
        self._lease = lease
        self._retry_after = retry_after
        self._max_attempts = max_attempts
        self._clock = clock
        self._wake = asyncio.Event()
        self._tasks = TaskOwner("call-analytics")
        self._closing = False

    async def start(self) -> None:
        self._tasks.spawn(self._run(), name="worker")

    def wake(self) -> None:
        """Look for pending recordings now rather than at the next poll (same event loop only)."""
        self._wake.set()

    async def close(self, timeout: float) -> None:
        """Claim nothing more; a run still going after ``timeout`` is cancelled (its lease expires and a
        replica runs it again later)."""
        self._closing = True
        self._wake.set()
        if await self._tasks.close(timeout):
            log.warning("call analytics cancelled at shutdown")

    async def _run(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                found = await self.run_once()
            except Exception as exc:  # the database may be briefly away: try again at the next poll
                log.warning("call analytics claim failed", error=f"{type(exc).__name__}: {exc}")
                found = False
            if found:
                continue  # more may be pending
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_interval):
                    await self._wake.wait()

    async def run_once(self) -> bool:
        """Claim one pending recording and analyse it; False when none was due."""
        claim = await self.claim() if await self._any_due() else None
        if claim is None:
            return False
        await self.analyze(claim)
        return True

    def _due(self) -> ColumnElement[bool]:
        """Pending, and not leased (or the lease ran out)."""
        lease = CallAnalytics.lease_until
        return and_(CallAnalytics.status == "pending", or_(lease.is_(None), lease < self._clock()))

    async def _any_due(self) -> bool:
        """A read first: an idle SQLite database is never write-locked by polling."""
        async with self._db.read() as session:
            found = await session.scalar(select(CallAnalytics.call_id).where(self._due()).limit(1))
        return found is not None

    async def claim(self) -> Claim | None:
        """Lease the pending recording waiting longest (None: none is due)."""
        async with self._db.write() as session:
            call_id = await session.scalar(
                select(CallAnalytics.call_id)
                .where(self._due())
                .order_by(CallAnalytics.updated_at)
                .limit(1)
                .with_for_update(skip_locked=True)
            )
            if call_id is None:
                return None
            lease_until = self._clock() + self._lease
            attempts = await session.scalar(
                update(CallAnalytics)
                .where(CallAnalytics.call_id == call_id)
                .values(attempts=CallAnalytics.attempts + 1, lease_until=lease_until, updated_at=self._clock())
                .returning(CallAnalytics.attempts)
            )
        return Claim(call_id, int(attempts or 0), lease_until)

    async def analyze(self, claim: Claim) -> None:
        """Measure the claimed call's recording and store the outcome (never raises)."""
        started = time.perf_counter()
        try:
            result = await self._measure(claim.call_id)
        except UnsupportedAudioError as exc:
            await self._failed(claim, str(exc), final=True)
        except NotFoundError as exc:  # the call or its recording was deleted meanwhile
            await self._failed(claim, exc.detail, final=True)
        except Exception as exc:
            log.warning("call analytics failed", call_id=claim.call_id, error=f"{type(exc).__name__}: {exc}")
            await self._failed(claim, f"{type(exc).__name__}: {exc}", final=claim.attempts >= self._max_attempts)
        else:
            await self._completed(claim, result)
            self._metrics.analytics_seconds.observe(time.perf_counter() - started)
            self._metrics.analytics_audio_seconds.inc(result.analyzed_seconds)
            log.info(
                "call analysed",
                call_id=claim.call_id,
                audio_seconds=result.analyzed_seconds,
                seconds=round(time.perf_counter() - started, 3),
            )

    async def _measure(self, call_id: str) -> Conversation:
        view = await self._recordings.view(call_id)
        recording = view.recording
        detector = ChannelDetector(sample_rate=recording.sample_rate, channels=recording.channels, mode=self._mode)
        pieces = timeline(view.extents, channels=recording.channels, fill_gaps=True, mono=False)
        customer, assistant = await detect(self._storage, pieces, detector)
        result = conversation(customer, assistant)
        if not result.analyzed_seconds:
            raise UnsupportedAudioError(NO_AUDIO)
        return result

    async def _completed(self, claim: Claim, result: Conversation) -> None:
        now = self._clock()
        values = {
            "status": "completed",
            "customer_talk_seconds": result.customer.talk_seconds,
            "customer_silence_seconds": result.customer.silence_seconds,
            "assistant_talk_seconds": result.assistant.talk_seconds,
            "assistant_silence_seconds": result.assistant.silence_seconds,
            "overlap_seconds": result.overlap_seconds,
            "longest_silence_seconds": result.longest_silence_seconds,
            "customer_interruptions": result.customer_interruptions,
            "assistant_interruptions": result.assistant_interruptions,
            "talk_ratio": result.talk_ratio,
            "analyzed_seconds": result.analyzed_seconds,
            "activity": {
                "customer": [list(turn) for turn in result.customer.turns],
                "assistant": [list(turn) for turn in result.assistant.turns],
            },
            "error": None,
            "lease_until": None,
            "completed_at": now,
            "updated_at": now,
        }
        summary = AnalyticsOut(
            status="completed",
            customer=ChannelTalk(result.customer.talk_seconds, result.customer.silence_seconds),
            assistant=ChannelTalk(result.assistant.talk_seconds, result.assistant.silence_seconds),
            overlap_seconds=result.overlap_seconds,
            longest_silence_seconds=result.longest_silence_seconds,
            interruptions=Interruptions(result.customer_interruptions, result.assistant_interruptions),
            talk_ratio=result.talk_ratio,
        )
        await self._store(claim, values, outcome="completed", analyzed=msgspec.to_builtins(summary))

    async def _failed(self, claim: Claim, error: str, *, final: bool) -> None:
        now = self._clock()
        if final:
            values = {"status": "failed", "error": error, "lease_until": None, "updated_at": now}
        else:  # stays pending: claimable again once this pause is over
            values = {"error": error, "lease_until": now + self._retry_after, "updated_at": now}
        await self._store(claim, values, outcome="failed" if final else "retried")

    async def _store(
        self, claim: Claim, values: Mapping[str, object], *, outcome: str, analyzed: dict[str, Any] | None = None
    ) -> None:
        """Write the outcome if the claim still holds; ``analyzed``: the summary of a completed run, also
        appended to the call's timeline as ``call.analyzed`` through the call writer, in the same
        transaction (only by the run whose result is stored)."""
        try:
            async with self._writer.transaction() as unit:
                stored = await unit.session.execute(
                    update(CallAnalytics)
                    .where(
                        CallAnalytics.call_id == claim.call_id,
                        CallAnalytics.attempts == claim.attempts,
                        CallAnalytics.lease_until == claim.lease_until,
                    )
                    .values(**values)
                )
                # The row stored, its call exists: a concurrent erasure waits for this transaction.
                if analyzed is not None and stored.rowcount:  # type: ignore[attr-defined]
                    call = await unit.lock_one(claim.call_id, origin="analytics")
                    event = NewEvent("switchboard", "call.analyzed", analyzed)
                    unit.record(call, [event], origin="analytics", previous_status=call.status)
        except Exception as exc:  # not stored: the lease expires and the run is done again
            log.warning("call analytics not stored", call_id=claim.call_id, error=type(exc).__name__)
            outcome = "not-stored"
        self._metrics.analytics_runs.labels(outcome=outcome).inc()
