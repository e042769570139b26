"""Ingesting Vapi server messages: parse, store as an event, apply to the call, steer listening."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import msgspec
import structlog
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.bodies import BodyError, decode_json_body
from service.calls.changes import CallChange
from service.calls.events import NewEvent
from service.calls.ids import is_call_id
from service.calls.tracking import apply_message, parse_timestamp
from service.calls.writer import CallWriter
from service.db.models import Call, CallEvent
from service.errors import AuthenticationError, DomainError, ServiceUnavailableError
from service.metrics import Metrics
from service.settings import Settings
from service.tasks import TaskOwner
from service.vapi.messages import REQUEST_TYPES, base_type, metric_type
from service.webhooks.relay import Relay, RelayedAnswer
from service.webhooks.verify import DEFAULT_HMAC, HmacScheme, authenticated

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
    answer: RelayedAnswer | None = None  # a request message's answer (see ``relay``)


# The fields that tell one server message from another of the same call and type (contract §9).
IDENTITY_FIELDS = ("status", "role", "turn", "transcriptType")


def dedupe_key(message: Mapping[str, Any], raw: bytes) -> str:
    """The identity of a server message, for duplicate deliveries (a retry by Vapi's backoff plan, a
    proxy replay). Not its bytes: Vapi regenerates presigned artifact URLs on every delivery. The call
    id, type and ``timestamp`` (with status, role, turn and transcript type where present) tell every
    distinct message apart; without a timestamp, the bytes are all there is."""
    if message.get("timestamp") is None:
        return hashlib.sha256(raw).hexdigest()[:32]
    call = message.get("call") or {}
    identity = [call.get("id"), base_type(str(message.get("type"))), message.get("timestamp")]
    identity += [message.get(name) for name in IDENTITY_FIELDS]
    return "m" + hashlib.sha256(msgspec.json.encode(identity)).hexdigest()[:31]


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
    hmac: HmacScheme = DEFAULT_HMAC

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookAuth:
        return cls(
            secret_header=settings.webhook_secret_header,
            secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
            hmac_secret=settings.webhook_hmac_secret.get_secret_value() if settings.webhook_hmac_secret else None,
            hmac=HmacScheme(
                algorithm=settings.webhook_hmac_algorithm,
                encoding=settings.webhook_hmac_encoding,
                signature_header=settings.webhook_hmac_signature_header,
                timestamp_header=settings.webhook_hmac_timestamp_header,
                prefix=settings.webhook_hmac_signature_prefix,
                payload_format=settings.webhook_hmac_payload_format,
            ),
        )


@dataclass(slots=True)
class _Received:
    """A parsed message waiting for the next batch."""

    message: dict[str, Any]
    vapi_call: dict[str, Any]
    at: dt.datetime | None
    key: str
    done: asyncio.Future[IngestResult]
    raw: bytes | None = None
    answer: RelayedAnswer | None = None


@dataclass(frozen=True, slots=True)
class _Applied:
    """A message's answer, and what to log about its call after the commit."""

    result: IngestResult
    created: bool = False
    status: str | None = None


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
        calls: CallWriter,
        metrics: Metrics,
        *,
        auth: WebhookAuth,
        relay: Relay | None = None,
        inbound_upstream: dict[str, Any] | None = None,
    ) -> None:
        self._auth = auth
        self._relay = relay  # answers the messages that need an answer (none: they are only stored)
        self._inbound_upstream = inbound_upstream  # a call first seen here forwards to it
        self._calls = calls
        self._metrics = metrics
        self._queue: asyncio.Queue[_Received] = asyncio.Queue(QUEUE_LIMIT)
        self._writer = TaskOwner("webhooks")  # the batch writer
        self._accepting = False

    async def start(self) -> None:
        self._writer.spawn(self._write_batches(), name="writer")
        self._accepting = True

    async def close(self, timeout: float = 5.0) -> None:
        """Answer what is queued (within ``timeout``), then stop the writer (requests still arriving
        get 503)."""
        if not self._accepting:
            return
        self._accepting = False
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._queue.join()
        await self._writer.close()

    async def receive(self, headers: Mapping[str, str], raw: bytes) -> IngestResult:
        """Authenticate the raw request (before parsing anything), then ingest it."""
        auth = self._auth
        if not authenticated(
            headers,
            raw,
            secret_header=auth.secret_header,
            secret=auth.secret,
            hmac_secret=auth.hmac_secret,
            scheme=auth.hmac,
            now=time.time(),
        ):
            raise AuthenticationError("missing or wrong webhook secret or signature")
        return await self.ingest(raw)

    async def ingest(self, raw: bytes) -> IngestResult:
        message = parse_message(raw)
        kind: str = message["type"]
        self._metrics.webhooks.labels(type=metric_type(kind)).inc()
        answer = None
        if self._relay is not None and base_type(kind) in REQUEST_TYPES:
            answer = await self._relay.answer(message, raw)
        vapi_call: dict[str, Any] | None = message.get("call")
        if vapi_call is None:
            # Messages not tied to a call (rare: phone-number level requests) have no timeline.
            log.info("webhook without a call not stored", type=kind)
            return IngestResult(stored=False, call_id=None, answer=answer)
        if not self._accepting:
            raise ServiceUnavailableError("the service is not running its webhook writer (starting or stopping)")
        done: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        at = parse_timestamp(message.get("timestamp"))
        await self._queue.put(_Received(message, vapi_call, at, dedupe_key(message, raw), done, raw, answer))
        result = await done
        return result if answer is None else replace(result, answer=answer)

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
        """Apply ``batch`` in order in one unit of work of the call writer."""
        outcomes: list[_Applied | int] = []  # an int: the position of the change that stored the message
        # Urgent: the milestones rules answer are in here; bookkeeping writes wait (Database.write).
        async with self._calls.transaction(urgent=True) as unit:
            calls = await unit.lock([item.vapi_call["id"] for item in batch], origin="webhook")
            stored: dict[tuple[str, str], int] = {}
            if look_up_duplicates:
                pairs = [(item.vapi_call["id"], item.key) for item in batch]
                stored = await stored_dedupe_keys(unit.session, pairs)
            for item in batch:
                call_id = item.vapi_call["id"]
                call = calls.get(call_id)
                if call is None:  # erased: a late message does not store the call again
                    log.info("webhook for an erased call dropped", call_id=call_id, type=item.message.get("type"))
                    outcomes.append(_Applied(IngestResult(stored=False, call_id=call_id)))
                    continue
                if (call.id, item.key) in stored:
                    seq = stored[(call.id, item.key)] or None
                    outcomes.append(_Applied(IngestResult(stored=False, call_id=call.id, seq=seq, duplicate=True)))
                    continue
                stored[(call.id, item.key)] = 0
                before = unit.status_before(call)
                events = apply_message(call, item.message, item.vapi_call, item.at, item.key, original=item.raw)
                self._note_upstream(call, item, created=unit.created(call))
                if item.answer is not None:  # stored with the question; never forwarded again
                    events.insert(1, NewEvent("switchboard", "upstream.answered", item.answer.record, item.at))
                outcomes.append(unit.record(call, events, origin="webhook", previous_status=before))
        return [outcome if isinstance(outcome, _Applied) else _stored(unit.changes[outcome]) for outcome in outcomes]

    def _note_upstream(self, call: Call, item: _Received, *, created: bool) -> None:
        """A call first seen through a webhook (inbound, or placed elsewhere) forwards to the upstream
        its assistant-request answer named, else to the org-wide one."""
        if call.upstream is not None:
            return
        if item.answer is not None and item.answer.upstream is not None:
            call.upstream = item.answer.upstream
        elif created and self._inbound_upstream is not None:
            call.upstream = dict(self._inbound_upstream)

    @staticmethod
    def _after_commit(applied: _Applied) -> None:
        if applied.created:
            log.info("call tracked from webhook", call_id=applied.result.call_id, status=applied.status)


def _stored(change: CallChange) -> _Applied:
    assert change.call is not None
    result = IngestResult(stored=True, call_id=change.call_id, seq=change.events[0].seq)
    return _Applied(result, created=change.first_sighting, status=change.call.status)


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
