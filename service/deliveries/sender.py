"""One delivery attempt: check the destination, sign, POST, and turn whatever happens into a result.

Kept apart from the worker's bookkeeping so it can be exercised against any transport
(``httpx.MockTransport``) without a database.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from standardwebhooks import Webhook

from service import __version__
from service.db.models import utcnow
from service.deliveries.retry import parse_retry_after
from service.metrics import Metrics
from service.outbound_urls import Resolver, UnsafeUrlError, check_webhook_url, pinned_request_target, resolve_host

ERROR_EXCERPT_BYTES = 512


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    """Everything one attempt needs, read at claim time so the attempt holds no database session."""

    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    url: str
    secret: str
    message_id: str
    event_type: str
    body: bytes
    created_at: dt.datetime
    attempt: int  # the fencing token: ``attempts`` as bumped by this claim


@dataclass(frozen=True, slots=True)
class AttemptResult:
    attempted_at: dt.datetime
    status_code: int | None
    error: str | None
    duration_ms: int
    retry_after: float | None = None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


def sign_headers(secret: str, message_id: str, timestamp: dt.datetime, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (a fresh timestamp each time, same id)."""
    signature = Webhook(secret).sign(message_id, timestamp, body.decode())
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signature,
    }


def webhook_client(concurrency: int) -> httpx.AsyncClient:
    """The HTTP client for receivers, separate from the one that talks to Vapi: receivers are
    untrusted, so no shared pool they could exhaust, no redirects (a 3xx could point inside the
    network), no compression (an error body is read a few hundred bytes at most)."""
    return httpx.AsyncClient(
        follow_redirects=False,
        limits=httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency),
        headers={"User-Agent": f"switchboard-webhooks/{__version__}", "Accept-Encoding": "identity"},
    )


class WebhookSender:
    """Sends one signed attempt; never raises for the receiver's faults."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        *,
        metrics: Metrics,
        allow_private: bool,
        timeout: float,
        resolver: Resolver = resolve_host,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._http = http
        self._metrics = metrics
        self._allow_private = allow_private
        self._timeout = timeout
        self._resolver = resolver
        self._clock = clock

    async def send(self, delivery: ClaimedDelivery) -> AttemptResult:
        """One HTTP attempt. Never raises for the receiver's faults: they become the result."""
        attempted_at = self._clock()
        started = time.perf_counter()

        def result(status_code: int | None, error: str | None, retry_after: float | None = None) -> AttemptResult:
            duration = time.perf_counter() - started
            self._metrics.webhook_attempt_seconds.observe(duration)
            return AttemptResult(attempted_at, status_code, error, round(duration * 1000), retry_after)

        try:
            checked = await check_webhook_url(delivery.url, allow_private=self._allow_private, resolver=self._resolver)
        except UnsafeUrlError as exc:
            self._metrics.webhook_attempts.labels("refused").inc()
            return result(None, f"refused: {exc}")
        url, headers, extensions = pinned_request_target(checked)
        try:
            headers.update(sign_headers(delivery.secret, delivery.message_id, self._clock(), delivery.body))
        except Exception as exc:  # a secret that is not valid base64 after all: nothing to send
            self._metrics.webhook_attempts.labels("failure").inc()
            return result(None, f"cannot sign: {type(exc).__name__}")
        headers["Content-Type"] = "application/json"
        try:
            async with (
                asyncio.timeout(self._timeout + 1),
                self._http.stream(
                    "POST", url, content=delivery.body, headers=headers, extensions=extensions, timeout=self._timeout
                ) as response,
            ):
                status = response.status_code
                excerpt = "" if 200 <= status < 300 else await _read_excerpt(response)
                retry_after = parse_retry_after(response.headers.get("retry-after"), now=self._clock())
        except (httpx.HTTPError, httpx.InvalidURL, TimeoutError, OSError, UnicodeError) as exc:
            self._metrics.webhook_attempts.labels("failure").inc()
            message = str(exc) or "no response within the timeout"
            return result(None, f"{type(exc).__name__}: {message}"[:1000])
        if 200 <= status < 300:
            self._metrics.webhook_attempts.labels("success").inc()
            return result(status, None)
        self._metrics.webhook_attempts.labels("gone" if status == 410 else "failure").inc()
        error = f"HTTP {status}" + (f": {excerpt}" if excerpt else "")
        return result(status, error, retry_after)


async def _read_excerpt(response: httpx.Response) -> str:
    """The start of an error response, for the delivery log; never more than a few hundred bytes read."""
    excerpt = bytearray()
    try:
        async for chunk in response.aiter_raw():
            excerpt += chunk[: ERROR_EXCERPT_BYTES - len(excerpt)]
            if len(excerpt) >= ERROR_EXCERPT_BYTES:
                break
    except httpx.StreamConsumed:  # the transport had already read the body (in-memory transports)
        excerpt = bytearray(response.content[:ERROR_EXCERPT_BYTES])
    return excerpt.decode(errors="replace").strip()
