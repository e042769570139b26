"""Erasing a call everywhere: its rows, its recording objects in storage, what points at it.

An erasure runs in three steps, so that a crash at any point leaves something a sweep can finish:

1. **Tombstone** (one transaction): the call is checked (not live, not held) and ``erasing_until`` is
   set. It is both the tombstone (this call is being erased) and the eraser's claim, which lapses after
   :data:`CLAIM_SECONDS`: a replica killed half-way loses its claim, and the next sweep finishes.
2. **Storage**: every object under ``<call id>/`` is deleted (idempotent: deleting nothing is fine);
   then **Vapi's copy** (``DELETE /call/{id}``; a call Vapi does not know is fine). Either failing
   releases the claim and leaves the tombstone to the next sweep; the audio goes first, whatever Vapi says.
3. **Rows** (one transaction): the idempotency records and outbound deliveries that carry the call,
   then the call row, whose foreign keys cascade to the timeline, metadata index, recording and its
   segments, injections and rule firings; a ``call.deleted`` event is queued in the same transaction.

Claims are taken with a conditional ``UPDATE`` (and ``FOR UPDATE SKIP LOCKED`` on PostgreSQL for a
sweep's batch), so each call has one eraser across replicas.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Literal

import structlog
from sqlalchemy import ColumnElement, and_, delete, exists, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.calls.status import is_live
from service.db.engine import Database
from service.db.models import Call, ErasedCall, IdempotencyRecord, Recording, WebhookDelivery, utcnow
from service.deliveries.outbox import enqueue
from service.errors import ConflictError, NotFoundError, ServiceUnavailableError, UpstreamError
from service.metrics import Metrics
from service.recordings.storage import RecordingStorage, StorageError
from service.vapi.client import VapiClient

log = structlog.get_logger(__name__)

CLAIM_SECONDS = 60.0  # an eraser's claim on a call: far longer than deleting one call's objects takes
Reason = Literal["request", "retention", "sweep"]


def _escape_like(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _idempotency_of(call_id: str) -> ColumnElement[bool]:
    """Idempotency records of the call: its creation (the stored answer is the call) and its controls."""
    return or_(
        IdempotencyRecord.response_body["id"].as_string() == call_id,
        IdempotencyRecord.route.like(f"% /v1/calls/{_escape_like(call_id)}/%", escape="\\"),
    )


_OPEN_RECORDING = exists().where(Recording.call_id == Call.id, Recording.status == "recording")


class Eraser:
    """Erases calls: on request (``DELETE /v1/calls/{id}``) and for the sweep (retention, tombstones)."""

    def __init__(
        self,
        db: Database,
        storage: RecordingStorage,
        *,
        vapi: VapiClient | None = None,
        metrics: Metrics | None = None,
        claim_seconds: float = CLAIM_SECONDS,
    ) -> None:
        """``vapi``: where the call's copy at Vapi is deleted (None: no Vapi API key, nothing to delete there)."""
        self._db = db
        self._storage = storage
        self._vapi = vapi
        self._metrics = metrics
        self._claim = dt.timedelta(seconds=claim_seconds)

    @property
    def claim_seconds(self) -> float:
        """How long a claim lasts: an eraser that died is replaced this long after it claimed."""
        return self._claim.total_seconds()

    async def erase(self, call_id: str) -> None:
        """Erase the call now: 404 when unknown, 409 while live, held or being erased by another.

        When storage or Vapi fails after the tombstone is committed, the erasure is left to the sweep (503).
        """
        async with self._db.write() as session:
            query = select(Call.status, Call.legal_hold, Call.erasing_until, _OPEN_RECORDING).where(Call.id == call_id)
            if not self._db.is_sqlite:
                query = query.with_for_update(of=Call)
            row = (await session.execute(query)).one_or_none()
            if row is None:
                raise NotFoundError(f"no call with id {call_id!r}")
            status, held, erasing_until, recording = row
            now = utcnow()
            if held:
                raise ConflictError(f"call {call_id!r} is on legal hold: lift the hold to erase it", legalHold=True)
            if is_live(status) or recording:
                raise ConflictError(f"call {call_id!r} is live (status {status!r}): erase it once it has ended")
            if erasing_until is not None and erasing_until > now:
                raise ConflictError(f"call {call_id!r} is already being erased")
            await session.execute(update(Call).where(Call.id == call_id).values(erasing_until=now + self._claim))
        if not await self.finish(call_id, reason="request"):
            raise ServiceUnavailableError(
                f"the erasure of call {call_id!r} started but storage or Vapi failed; it is finished by the next "
                "sweep (or retry the request)"
            )

    async def finish(self, call_id: str, *, reason: Reason) -> bool:
        """Steps 2 and 3 for a call this process has claimed; False (claim released) when storage or
        Vapi failed."""
        try:
            removed = await self._storage.delete_prefix(call_id)
            if self._vapi is not None:
                await self._vapi.delete_call(call_id)
        except (StorageError, UpstreamError) as exc:
            log.warning("call erasure interrupted; the sweep retries", call_id=call_id, error=exc.args[0])
            async with self._db.write() as session:  # release the claim: the next sweep need not wait
                await session.execute(update(Call).where(Call.id == call_id).values(erasing_until=utcnow()))
            return False
        async with self._db.write() as session:
            await self._delete_rows(session, call_id, reason)
        if self._metrics is not None:
            self._metrics.calls_erased.labels(reason).inc()
        log.info("call erased", call_id=call_id, reason=reason, objects=removed)
        return True

    async def _delete_rows(self, session: AsyncSession, call_id: str, reason: Reason) -> None:
        await session.execute(delete(IdempotencyRecord).where(_idempotency_of(call_id)))
        await session.execute(delete(WebhookDelivery).where(WebhookDelivery.call_id == call_id))  # indexed
        # Cascades: call_event, call_metadata, recording (and its segments), injection, rule_firing.
        deleted = await session.execute(delete(Call).where(Call.id == call_id, Call.erasing_until.is_not(None)))
        if deleted.rowcount:  # type: ignore[attr-defined]  # a CursorResult for deletes
            now = utcnow()
            session.add(ErasedCall(id=call_id, reason=reason, erased_at=now))  # never stored again
            erased_at = now.isoformat().replace("+00:00", "Z")
            await enqueue(session, "call.deleted", {"id": call_id, "reason": reason, "erasedAt": erased_at})

    async def claim(self, *, retention: float | None, limit: int) -> list[tuple[str, Reason]]:
        """Claim up to ``limit`` calls to erase: tombstones whose claim lapsed, then calls past retention.

        Never a held or live call. Safe with several replicas: a claimed call is skipped by the others.
        """
        now = utcnow()
        claimed: list[tuple[str, Reason]] = []
        async with self._db.write() as session:
            lapsed = and_(Call.erasing_until.is_not(None), Call.erasing_until <= now)
            claimed += [(call_id, "sweep") for call_id in await self._claim_batch(session, lapsed, limit, now)]
            if retention is not None and len(claimed) < limit:
                expired = and_(
                    Call.ended_at < now - dt.timedelta(seconds=retention),
                    Call.status == "ended",
                    Call.legal_hold.is_(False),
                    Call.erasing_until.is_(None),
                    ~_OPEN_RECORDING,
                )
                ids = await self._claim_batch(session, expired, limit - len(claimed), now)
                claimed += [(call_id, "retention") for call_id in ids]
        return claimed

    async def _claim_batch(
        self, session: AsyncSession, condition: ColumnElement[bool], limit: int, now: dt.datetime
    ) -> Sequence[str]:
        query = select(Call.id).where(condition).order_by(Call.ended_at).limit(limit)
        if not self._db.is_sqlite:  # SQLite has one writer at a time: the transaction is the claim
            query = query.with_for_update(of=Call, skip_locked=True)
        ids = list((await session.scalars(query)).all())
        if ids:
            await session.execute(update(Call).where(Call.id.in_(ids)).values(erasing_until=now + self._claim))
        return ids
