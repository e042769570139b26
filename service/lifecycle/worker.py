"""The lifecycle's background work, owned by the app's lifespan: the erasure sweep and the archiver.

- **Sweep**: at start-up, then every tick, tombstones whose eraser died are finished; every
  ``SWITCHBOARD_RETENTION_SWEEP_SECONDS``, calls past ``SWITCHBOARD_RETENTION`` are erased too. A pass
  claims at most :data:`SWEEP_BATCH` calls (bounded work per pass; a full pass is followed by another
  right away, so a backlog drains without one replica holding a long transaction).
- **Utterance ceilings**: each pass settles the ``utterance_ceiling`` of calls quiet for a minute
  (:func:`service.fulltext.ceilings.settle_ceilings`), which transcript search starts from.
- **Delivery history**: with the retention pass, settled outbound deliveries and forwards older than
  ``SWITCHBOARD_DELIVERY_HISTORY`` are deleted (:mod:`service.lifecycle.history`).
- **Archiver** (``SWITCHBOARD_ARCHIVE_FORMAT=flac``): finished PCM recordings are archived one at a time.
- The ``switchboard_recording_stored_bytes`` gauge is refreshed at start-up, after each retention pass
  or erasure, and when the archiver has caught up (it sums every recording: not on every idle tick).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog
from sqlalchemy import func, select

from service.db.engine import Database
from service.db.models import Recording
from service.fulltext.ceilings import settle_ceilings
from service.lifecycle.archive import ArchiveError, Archiver
from service.lifecycle.erasure import Eraser
from service.lifecycle.history import purge_settled
from service.metrics import Metrics
from service.tasks import TaskOwner

log = structlog.get_logger(__name__)

SWEEP_BATCH = 100
ARCHIVE_POLL_SECONDS = 5.0


class LifecycleWorker:
    def __init__(
        self,
        db: Database,
        eraser: Eraser,
        metrics: Metrics,
        *,
        retention: float | None,
        sweep_seconds: float,
        delivery_history: float | None = None,
        archiver: Archiver | None = None,
        batch: int = SWEEP_BATCH,
        archive_poll_seconds: float = ARCHIVE_POLL_SECONDS,
    ) -> None:
        self._db = db
        self._eraser = eraser
        self._metrics = metrics
        self._retention = retention
        self._delivery_history = delivery_history
        self._sweep_seconds = sweep_seconds
        # Tombstones are looked for at least as often as an eraser's claim lapses.
        self._tick = min(sweep_seconds, eraser.claim_seconds)
        self._archiver = archiver
        self._batch = batch
        self._archive_poll = archive_poll_seconds
        self._stopping = asyncio.Event()
        self._tasks = TaskOwner("lifecycle")

    async def start(self) -> None:
        """Start the sweep (its first pass runs now: a crash's tombstones are finished at start-up)."""
        self._tasks.spawn(self._sweep_loop(), name="sweep")
        if self._archiver is not None:
            self._tasks.spawn(self._archive_loop(self._archiver), name="archive")

    async def close(self, timeout: float) -> None:
        """Stop: the call being erased or archived gets ``timeout`` seconds; a cancelled one is finished
        later from its tombstone or claim."""
        self._stopping.set()
        await self._tasks.close(timeout)

    async def sweep(self, *, retention: bool = True) -> int:
        """One pass: claim up to a batch of calls (lapsed tombstones, then expired calls) and erase them."""
        claimed = await self._eraser.claim(retention=self._retention if retention else None, limit=self._batch)
        erased = 0
        for call_id, reason in claimed:
            erased += await self._eraser.finish(call_id, reason=reason)
        return erased

    async def refresh_stored_bytes(self) -> None:
        """Set the gauge of bytes at rest by format from the recordings' rows."""
        stored = func.coalesce(Recording.stored_bytes, Recording.bytes)
        async with self._db.read() as session:
            rows = (await session.execute(select(Recording.format, func.sum(stored)).group_by(Recording.format))).all()
        totals = {"pcm": 0, "flac": 0} | {fmt: int(total or 0) for fmt, total in rows}
        for fmt, total in totals.items():
            self._metrics.recording_stored_bytes.labels(fmt).set(total)

    async def _sweep_loop(self) -> None:
        last_retention = float("-inf")
        while not self._stopping.is_set():
            wait = self._tick
            try:
                due = time.monotonic() - last_retention >= self._sweep_seconds
                if due:
                    last_retention = time.monotonic()
                erased = await self.sweep(retention=due)
                if due and self._delivery_history is not None:
                    purged = await purge_settled(self._db, older_than=self._delivery_history)
                    if purged:
                        log.info("delivery history purged", rows=purged)
                await settle_ceilings(self._db)
                if erased >= self._batch:
                    wait = 0.0  # a backlog: the next bounded pass right away
                if due or erased:
                    await self.refresh_stored_bytes()
            except Exception as exc:  # the database or storage may be briefly away: the next pass retries
                log.warning("lifecycle sweep failed", error=f"{type(exc).__name__}: {exc}")
            await self._sleep(wait)

    async def _archive_loop(self, archiver: Archiver) -> None:
        busy = False  # archived something since the gauge was last refreshed
        while not self._stopping.is_set():
            try:
                archived = await archiver.archive_next()
            except ArchiveError:
                continue  # logged; that recording keeps its claim, the next one is tried
            except Exception as exc:
                log.warning("archiver failed", error=f"{type(exc).__name__}: {exc}")
                archived = None
            if archived is not None:
                self._metrics.recordings_archived.inc()
                busy = True
                continue
            if busy:
                with contextlib.suppress(Exception):
                    await self.refresh_stored_bytes()
                busy = False
            await self._sleep(self._archive_poll)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
