"""Ingesting Vapi server messages: parse, store as an event, apply to the call, steer listening."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.bodies import BodyError, decode_json_body
from service.calls import status as call_status
from service.calls.events import NewEvent
from service.calls.ids import is_call_id
from service.calls.redact import redact
from service.calls.rows import CallRows
from service.calls.tracking import announce_status, apply_status, merge_vapi_call, parse_timestamp
from service.db.engine import Database
from service.db.models import Call, CallEvent
from service.errors import AuthenticationError, DomainError, ServiceUnavailableError
from service.metrics import Metrics
from service.settings import Settings
from service.vapi.messages import metric_type
from service.webhooks.verify import authenticated

if TYPE_CHECKING:
    from service.listen.supervisor import ListenSupervisor
    from service.rules.engine import Planned, RuleEngine

log = structlog.get_logger(__name__)

BATCH_MAX = 200
QUEUE_LIMIT = 10_000


MAX_TYPE_CHARS = 128


class MalformedWebhookError(DomainError):
    status_code = 400
    slug = "malformed-webhook"
    title = "Malformed webhook"


@dataclass(frozen=True, slots=True)
class IngestResult:
    stored: bool
    call_id: str | None
    seq: int | None = None
    duplicate: bool = False


def dedupe_key(raw: bytes) -> str:
    """Duplicate deliveries of one server message (a retry by Vapi's backoff plan, a proxy replay)
    carry the same bytes; every distinct message differs at least in its ``timestamp``."""
    return hashlib.sha256(raw).hexdigest()[:32]


def parse_message(raw: bytes) -> dict[str, Any]:
    """The ``message`` object of a server message body, or :class:`MalformedWebhookError`."""
    try:
        body = decode_json_body(raw)
    except BodyError as exc:
        raise MalformedWebhookError(str(exc)) from None
    if not isinstance(body, dict) or not isinstance(body.get("message"), dict):
        raise MalformedWebhookError('expected a JSON object with a "message" object')
    message: dict[str, Any] = body["message"]
    if not isinstance(message.get("type"), str) or not message["type"]:
        raise MalformedWebhookError('"message.type" must be a non-empty string')
    if len(message["type"]) > MAX_TYPE_CHARS:  # the event type column's width; Vapi's are short
        raise MalformedWebhookError(f'"message.type" must be at most {MAX_TYPE_CHARS} characters')
    call = message.get("call")
    if call is not None and not (isinstance(call, dict) and isinstance(call.get("id"), str)):
        raise MalformedWebhookError('"message.call" must be an object with a string "id"')
    if call is not None and not is_call_id(call["id"]):
        raise MalformedWebhookError('"message.call.id" must be 1-64 letters, digits, "-" or "_" (Vapi sends UUIDs)')
    return message


@dataclass(frozen=True, slots=True)
class WebhookAuth:
    """How Vapi authenticates its server messages (see ``verify``)."""

    secret_header: str
    secret: str | None
    hmac_secret: str | None

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookAuth:
        return cls(
            secret_header=settings.webhook_secret_header,
            secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
            hmac_secret=settings.webhook_hmac_secret.get_secret_value() if settings.webhook_hmac_secret else None,
        )


@dataclass(slots=True)
class _Received:
    """A parsed message waiting for the next batch."""

    message: dict[str, Any]
    vapi_call: dict[str, Any]
    at: dt.datetime | None
    key: str
    done: asyncio.Future[IngestResult]


@dataclass(slots=True)
class _Applied:
    """What a stored message needs after the commit: notifications and its answer."""

    result: IngestResult
    call: Call | None = None
    created: bool = False
    firings: Planned | None = None  # rule firings recorded with the events


class WebhookService:
    """Stores server messages and applies them to calls, many per transaction ("group commit").

    Each request parses and validates its message, queues it and waits. One writer task takes every
    message waiting (up to ``BATCH_MAX``) and applies them in order in a single transaction: one locking
    read of the calls involved, one duplicate check, one sequence allocation per call, one insert of all
    events, one commit. A request is answered only after the commit that stored its message, so an
    acknowledged webhook is never lost. Under load the batches grow and the per-message cost falls;
    when idle a batch is one message, as before. If a batch fails, its messages are retried one by one,
    so a bad message fails alone.
    """

    def __init__(
        self,
        db: Database,
        supervisor: ListenSupervisor,
        metrics: Metrics,
        *,
        auth: WebhookAuth,
        rules: RuleEngine | None = None,
    ) -> None:
        self._auth = auth
        self._db = db
        self._supervisor = supervisor
        self._metrics = metrics
        self._rules = rules
        self._queue: asyncio.Queue[_Received] = asyncio.Queue(QUEUE_LIMIT)
        self._writer: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._writer = asyncio.create_task(self._write_batches(), name="webhook-writer")

    async def close(self) -> None:
        """Answer what is queued, then stop the writer (requests still arriving get 503)."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._queue.join()
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)

    async def receive(self, headers: Mapping[str, str], raw: bytes) -> IngestResult:
        """Authenticate the raw request (before parsing anything), then ingest it."""
        auth = self._auth
        if not authenticated(
            headers,
            raw,
            secret_header=auth.secret_header,
            secret=auth.secret,
            hmac_secret=auth.hmac_secret,
            now=time.time(),
        ):
            raise AuthenticationError("missing or wrong webhook secret or signature")
        return await self.ingest(raw)

    async def ingest(self, raw: bytes) -> IngestResult:
        message = parse_message(raw)
        kind: str = message["type"]
        self._metrics.webhooks.labels(type=metric_type(kind)).inc()
        vapi_call: dict[str, Any] | None = message.get("call")
        if vapi_call is None:
            # Messages not tied to a call (rare: phone-number level requests) have no timeline.
            log.info("webhook without a call ignored", type=kind)
            return IngestResult(stored=False, call_id=None)
        if self._writer is None:
            raise ServiceUnavailableError("the service is not running its webhook writer (starting or stopping)")
        done: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        await self._queue.put(
            _Received(message, vapi_call, parse_timestamp(message.get("timestamp")), dedupe_key(raw), done)
        )
        return await done

    async def _write_batches(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < BATCH_MAX and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            applied = await self._apply_batch(batch)
            for _ in batch:
                self._queue.task_done()
            for item, outcome in zip(batch, applied, strict=True):
                if isinstance(outcome, BaseException):
                    if not item.done.done():
                        item.done.set_exception(outcome)
                    continue
                self._after_commit(outcome)
                if not item.done.done():
                    item.done.set_result(outcome.result)

    async def _apply_batch(self, batch: list[_Received]) -> list[_Applied | BaseException]:
        """One transaction for the batch. Duplicate deliveries are rare (Vapi retries only with a backoff
        plan), so the first try leaves them to the unique (call, dedupe key) index; if it refuses one,
        the batch is applied again looking the stored keys up first; then item by item."""
        for look_up_duplicates in (False, True):
            try:
                return list(await self._apply(batch, look_up_duplicates=look_up_duplicates))
            except IntegrityError:
                continue
            except Exception:
                break
        return [await self._apply_alone(item) for item in batch]

    async def _apply_alone(self, item: _Received) -> _Applied | BaseException:
        try:
            return (await self._apply([item], look_up_duplicates=True))[0]
        except IntegrityError:
            # A concurrent duplicate (another replica) won the race for the unique (call, dedupe key).
            return _Applied(IngestResult(stored=False, call_id=item.vapi_call["id"], duplicate=True))
        except Exception as exc:
            return exc

    async def _apply(self, batch: list[_Received], *, look_up_duplicates: bool) -> list[_Applied]:
        """Apply ``batch`` in order in one transaction."""
        outcomes: list[_Applied] = []
        async with self._db.write() as session:
            rows = CallRows(session)
            calls = await rows.lock([item.vapi_call["id"] for item in batch], origin="webhook")
            created = set(rows.created)
            stored: dict[tuple[str, str], int] = {}
            if look_up_duplicates:
                stored = await stored_dedupe_keys(session, [(item.vapi_call["id"], item.key) for item in batch])
            events: dict[str, list[NewEvent]] = {}
            owners: list[tuple[_Applied, int, int]] = []
            for item in batch:
                call = calls[item.vapi_call["id"]]
                if (call.id, item.key) in stored:
                    seq = stored[(call.id, item.key)] or None
                    outcomes.append(_Applied(IngestResult(stored=False, call_id=call.id, seq=seq, duplicate=True)))
                    continue
                stored[(call.id, item.key)] = 0
                first_sighting = call.id in created
                created.discard(call.id)
                before = call.status
                new_events = apply_message(call, item.message, item.vapi_call, item.at, item.key)
                await announce_status(session, call, None if first_sighting else before)
                call_events = events.setdefault(call.id, [])
                outcome = _Applied(IngestResult(stored=True, call_id=call.id), call=call, created=first_sighting)
                owners.append((outcome, len(call_events), len(new_events)))
                call_events.extend(new_events)
                outcomes.append(outcome)
            numbered = {call_id: rows.append(calls[call_id], evs) for call_id, evs in events.items()}
            await rows.save()
            for outcome, offset, count in owners:
                assert outcome.call is not None
                own = numbered[outcome.call.id][offset : offset + count]
                outcome.result = IngestResult(stored=True, call_id=outcome.call.id, seq=own[0].seq)
                if self._rules is not None:
                    outcome.firings = await self._rules.plan(session, outcome.call, own)
        return outcomes

    def _after_commit(self, applied: _Applied) -> None:
        call = applied.call
        if call is None:
            return
        if self._rules is not None and applied.firings is not None:  # queues work, never blocks
            self._rules.dispatch(applied.firings)
        if applied.created:
            log.info("call tracked from webhook", call_id=call.id, status=call.status)
        if call.status == "ended":
            self._supervisor.call_ended(call.id)
        elif call.listen_url and call_status.is_live(call.status):
            self._supervisor.ensure_listening(call.id)
            if call.status in call_status.ANSWERED:
                self._supervisor.call_answered(call.id)


def apply_message(
    call: Call, message: dict[str, Any], vapi_call: dict[str, Any], at: dt.datetime | None, key: str
) -> list[NewEvent]:
    """Apply one server message to its call; the timeline events it produces."""
    kind: str = message["type"]
    before = call.status
    merge_vapi_call(call, vapi_call)
    if kind == "status-update" and isinstance(message.get("status"), str):
        apply_status(call, message["status"], at=at)
    if kind in ("status-update", "end-of-call-report") and isinstance(message.get("endedReason"), str):
        call.ended_reason = message["endedReason"]
    if kind == "end-of-call-report":
        apply_status(call, "ended", at=parse_timestamp(message.get("endedAt")) or at)
        call.started_at = call.started_at or parse_timestamp(message.get("startedAt"))
    events = [NewEvent("vapi", kind, redact(message), at, dedupe_key=key)]
    if call.status != before:
        events.append(NewEvent("switchboard", "call.status_changed", {"from": before, "to": call.status}, at))
    return events


async def stored_dedupe_keys(session: AsyncSession, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """Which (call, dedupe key) pairs are already stored, with their event's ``seq``.

    Both columns are constrained so that the unique (call_id, dedupe_key) index answers it: a lookup
    per pair, not a scan of the whole timeline table.
    """
    wanted = set(pairs)
    rows = await session.execute(
        select(CallEvent.call_id, CallEvent.dedupe_key, CallEvent.seq).where(
            CallEvent.call_id.in_({call_id for call_id, _ in wanted}),
            CallEvent.dedupe_key.in_({key for _, key in wanted}),
        )
    )
    return {(call_id, key): seq for call_id, key, seq in rows if (call_id, key) in wanted}
