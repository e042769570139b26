"""Messages that need an answer, relayed synchronously to the call's upstream (contract section 9).

``tool-calls``, ``assistant-request``, ``transfer-destination-request``… are questions Vapi waits on. The
upstream's status and body become Switchboard's answer, within ``SWITCHBOARD_FORWARD_TIMEOUT_SECONDS``
(below Vapi's 7.5 s). Without an upstream, or when it cannot answer in time, the answer is an error
in the message's own answer shape: never Switchboard's acknowledgement, which Vapi would read as an
empty answer (a tool with no result, a transfer to nowhere, an inbound call that cannot start).

An ``assistant-request`` answer is completed with Switchboard's monitor plan, subscription and server,
so that the inbound call it starts is tracked and recorded like a placed one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec
import structlog
from sqlalchemy import select

from service.calls.redact import redact
from service.calls.service import switchboard_server, switchboard_subscription
from service.calls.upstream import UpstreamResolver, default_upstream, request_headers
from service.db.engine import Database
from service.db.models import Call
from service.metrics import Metrics
from service.settings import Settings
from service.vapi.messages import base_type, error_answer

log = structlog.get_logger(__name__)

ANSWER_EXCERPT = 2000  # characters of a body that is not JSON kept in the timeline
INBOUND_LOOKUP_SECONDS = 2.0  # at most this long reading an inbound call's assistant from Vapi


@dataclass(frozen=True, slots=True)
class RelayedAnswer:
    """Switchboard's answer to a request message, and what the timeline keeps of it."""

    status: int
    body: bytes
    media_type: str
    record: dict[str, Any]  # the ``upstream.answered`` event's payload
    upstream: dict[str, Any] | None = None  # for an assistant-request: the inbound call's upstream


class Relay:
    """Asks the call's upstream and shapes its answer for Vapi."""

    def __init__(
        self, http: httpx.AsyncClient, db: Database, upstreams: UpstreamResolver, settings: Settings, metrics: Metrics
    ) -> None:
        self._http = http
        self._metrics = metrics
        self._db = db
        self._upstreams = upstreams
        self._settings = settings

    async def answer(self, message: dict[str, Any], raw: bytes) -> RelayedAnswer:
        """The answer to ``message`` (its raw body ``raw`` is what the upstream receives)."""
        kind = base_type(message["type"])
        upstream = await self._upstream_of(message, kind)
        if upstream is None:
            self._metrics.upstream_relays.labels("no-upstream").inc()
            return _error(message, "no upstream server is configured for this call", upstream=None)
        started = time.perf_counter()
        timeout = self._settings.forward_timeout_seconds
        try:
            async with asyncio.timeout(timeout):  # the whole exchange: httpx's timeout bounds each phase
                response = await self._http.post(
                    upstream["url"], content=raw, headers=request_headers(upstream), timeout=timeout
                )
        except Exception as exc:  # any failure is answered to Vapi, which waits for the answer
            if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
                reason = "did not answer in time"
            elif isinstance(exc, httpx.HTTPError):
                reason = "could not be reached"
            else:  # a URL or header value that cannot be sent (httpx.InvalidURL, UnicodeEncodeError)
                reason = "cannot be sent this request"
            log.warning("upstream failed a request message", type=kind, error=type(exc).__name__)
            self._metrics.upstream_relays.labels("failed").inc()
            return _error(message, f"the upstream server {reason}", upstream=upstream)
        seconds = time.perf_counter() - started
        duration_ms = round(seconds * 1000, 1)
        self._metrics.upstream_relays.labels("answered").inc()
        self._metrics.upstream_relay_seconds.observe(seconds)
        body, media_type = response.content, response.headers.get("content-type", "application/json")
        parsed = _json_or_none(body)
        inbound_upstream = None
        if kind == "assistant-request" and response.is_success and isinstance(parsed, dict):
            left = self._settings.forward_timeout_seconds - duration_ms / 1000
            inbound_upstream = await self._inbound_upstream(parsed, left=left)
            parsed = self.complete_assistant(parsed, inbound_upstream)
            body, media_type = msgspec.json.encode(parsed), "application/json"
        record = {
            "status": response.status_code,
            "durationMs": duration_ms,
            "source": upstream["source"],
            "answer": redact(parsed) if parsed is not None else body[:ANSWER_EXCERPT].decode(errors="replace"),
        }
        return RelayedAnswer(response.status_code, body, media_type, record, inbound_upstream)

    async def _inbound_upstream(self, answer: dict[str, Any], *, left: float) -> dict[str, Any] | None:
        """The inbound call's upstream; the org-wide one when Vapi is too slow to say which server the
        answer's assistant has (the answer must reach Vapi within its 7.5 s)."""
        try:
            async with asyncio.timeout(max(0.5, min(left, INBOUND_LOOKUP_SECONDS))):
                return await self._upstreams.for_assistant_answer(answer)
        except TimeoutError:
            log.warning("assistant lookup for an inbound call timed out: using the org-wide upstream")
            return default_upstream(self._settings)

    def complete_assistant(self, answer: dict[str, Any], upstream: Mapping[str, Any] | None) -> dict[str, Any]:
        """The upstream's assistant-request answer plus what Switchboard needs to track the call: its
        monitor plan, its subscription and its server (on the inline assistant, else the overrides).
        An answer that starts no assistant (a transfer ``destination``, an ``error``) is left alone."""
        if not self._settings.webhook_url or not ("assistant" in answer or "assistantId" in answer):
            return answer
        target_key = "assistant" if isinstance(answer.get("assistant"), dict) else "assistantOverrides"
        target = dict(answer.get(target_key) or {})
        target["monitorPlan"] = {**(target.get("monitorPlan") or {}), "listenEnabled": True, "controlEnabled": True}
        target["serverMessages"] = switchboard_subscription(target.get("serverMessages"), upstream)
        target["server"] = switchboard_server(self._settings)
        target.pop("serverUrl", None)  # a legacy server URL would compete with Switchboard's
        target.pop("serverUrlSecret", None)
        return {**answer, target_key: target}

    async def _upstream_of(self, message: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
        """The stored call's upstream; the org-wide default for a call not stored yet, and always for
        an assistant-request (its phone number points at Switchboard, so it cannot be the upstream)."""
        call = message.get("call")
        if kind != "assistant-request" and isinstance(call, Mapping) and isinstance(call.get("id"), str):
            async with self._db.read() as session:
                stored = await session.scalar(select(Call.upstream).where(Call.id == call["id"]))
            if stored is not None:
                return dict(stored)
        return default_upstream(self._settings)


def _error(message: Mapping[str, Any], error: str, *, upstream: Mapping[str, Any] | None) -> RelayedAnswer:
    """An error answer in the message's shape; 200, so that Vapi reads the error (a tool result the
    model can speak about) rather than failing the turn on a status."""
    answer = error_answer(message, error)
    record = {"status": None, "error": error, "source": upstream["source"] if upstream else None, "answer": answer}
    return RelayedAnswer(200, msgspec.json.encode(answer), "application/json", record)


def _json_or_none(body: bytes) -> Any:
    try:
        return msgspec.json.decode(body) if body else None
    except msgspec.DecodeError:
        return None
