"""The worker: claims due outbox rows, has them sent (``sender``), records every attempt.

Owned by the app's lifespan like the listen supervisor (``start()`` / ``close(timeout)``): one loop
task plus at most ``concurrency`` delivery tasks, all kept in a set and awaited at shutdown.

Replicas share the outbox. A claim is one short write transaction that selects due rows with
``FOR UPDATE SKIP LOCKED`` (PostgreSQL; SQLite's single writer serialises claims anyway), bumps
``attempts`` and pushes ``next_attempt_at`` one lease ahead. The lease keeps other replicas away while
the attempt runs; if this process dies mid-attempt the lease expires and another replica retries
(at least once, never lost). The bumped ``attempts`` is a fencing token: the result is written only if
the row still carries it, so a replica that lost its lease never overwrites a newer attempt's outcome.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import Callable

import httpx
import msgspec
import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.engine import Database
from service.db.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint, utcnow
from service.deliveries.outbox import subscribe_wakeups
from service.deliveries.retry import RetryPolicy
from service.deliveries.sender import AttemptResult, ClaimedDelivery, WebhookSender, webhook_client
from service.metrics import Metrics
from service.outbound_urls import Resolver, resolve_host
from service.tasks import TaskOwner

log = structlog.get_logger(__name__)


class DeliveryWorker:
    """Sends outbox rows until closed. Construct once per app; ``start()`` in the lifespan."""

    def __init__(
        self,
        db: Database,
        *,
        metrics: Metrics,
        allow_private: bool = False,
        http_client: httpx.AsyncClient | None = None,
        policy: RetryPolicy | None = None,
        concurrency: int = 16,
        batch_size: int = 50,
        poll_interval: float = 1.0,
        lease: dt.timedelta = dt.timedelta(seconds=60),
        request_timeout: float = 10.0,
        resolver: Resolver = resolve_host,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        if lease.total_seconds() <= request_timeout * 2:
            # The lease must outlast an attempt, or a second replica could send the same attempt.
            raise ValueError("the delivery lease must be well above the request timeout")
        self._db = db
        self._metrics = metrics
        self._owns_http = http_client is None
        self._http = http_client or webhook_client(concurrency)
        self._sender = WebhookSender(
            self._http,
            metrics=metrics,
            allow_private=allow_private,
            timeout=request_timeout,
            resolver=resolver,
            clock=clock,
        )
        self.policy = policy or RetryPolicy()
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._lease = lease
        self._clock = clock
        self._wake = asyncio.Event()
        self._claimer = TaskOwner("webhook-deliveries")  # the claim loop
        # One task per attempt; each that ends frees a slot, so the claim loop looks again.
        self._attempts = TaskOwner("webhook-delivery", limit=concurrency, on_done=self._wake.set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._closing = False

    @property
    def in_flight(self) -> int:
        return len(self._attempts)

    async def start(self) -> None:
        """Start the claim loop; events enqueued in this process wake it as soon as they commit."""
        self._loop = asyncio.get_running_loop()
        self._unsubscribe = subscribe_wakeups(self.wake)
        self._claimer.spawn(self._run(), name="claim")

    def wake(self) -> None:
        """Look for due deliveries now rather than at the next poll. Safe from any thread (an
        enqueueing transaction may commit on another event loop, e.g. in an embedding or a test)."""
        loop = self._loop
        if loop is None:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # that loop is already closed: nothing to wake
                loop.call_soon_threadsafe(self._wake.set)

    async def close(self, timeout: float) -> None:
        """Claim nothing more, let running attempts finish within ``timeout``, cancel the rest.

        A cancelled attempt keeps its lease and is retried by whichever replica runs after it expires.
        """
        self._closing = True
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._wake.set()
        await self._claimer.close(timeout)
        if cancelled := await self._attempts.close(timeout):
            log.warning("webhook deliveries cancelled at shutdown", count=cancelled)
        if self._owns_http:
            await self._http.aclose()

    async def _run(self) -> None:
        while not self._closing:
            # Cleared before looking, so a commit that lands while we look still wakes the next wait.
            self._wake.clear()
            wait = self._poll_interval
            free = self._attempts.free or 0
            if free > 0:
                try:
                    now = self._clock()
                    due_at = await self._next_due_at()
                    if due_at is not None and due_at <= now:
                        claimed = await self._claim(min(free, self._batch_size))
                        for delivery in claimed:
                            self._spawn(delivery)
                        if claimed:
                            continue  # more may be due; the next look says when
                    elif due_at is not None:
                        wait = min(wait, (due_at - now).total_seconds())
                except Exception as exc:  # the database may be briefly away; try again at the next poll
                    log.warning("webhook delivery claim failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(wait, 0.0)):
                    await self._wake.wait()

    def _spawn(self, delivery: ClaimedDelivery) -> None:
        self._attempts.spawn(self._deliver(delivery), name=str(delivery.delivery_id))

    async def _next_due_at(self) -> dt.datetime | None:
        """The earliest ``next_attempt_at`` of a pending delivery: a read, so an idle SQLite database is
        never write-locked by polling."""
        async with self._db.read() as session:
            due: dt.datetime | None = await session.scalar(
                select(WebhookDelivery.next_attempt_at)
                .where(WebhookDelivery.status == "pending")
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(1)
            )
        return due

    async def _claim(self, limit: int) -> list[ClaimedDelivery]:
        now = self._clock()
        async with self._db.write() as session:
            rows = (
                await session.execute(
                    select(WebhookDelivery, WebhookEndpoint.url, WebhookEndpoint.secret)
                    .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                    .where(
                        WebhookDelivery.status == "pending",
                        WebhookDelivery.next_attempt_at <= now,
                        WebhookEndpoint.enabled.is_(True),
                    )
                    .order_by(WebhookDelivery.next_attempt_at)
                    .limit(limit)
                    .with_for_update(of=WebhookDelivery, skip_locked=True)
                )
            ).all()
            if not rows:
                return []
            await session.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id.in_([delivery.id for delivery, _, _ in rows]))
                .values(attempts=WebhookDelivery.attempts + 1, next_attempt_at=now + self._lease)
                .execution_options(synchronize_session=False)
            )
            return [
                ClaimedDelivery(
                    delivery_id=delivery.id,
                    endpoint_id=delivery.endpoint_id,
                    url=url,
                    secret=secret,
                    message_id=delivery.message_id,
                    event_type=delivery.event_type,
                    body=msgspec.json.encode(delivery.payload),
                    created_at=delivery.created_at,
                    attempt=delivery.attempts + 1,
                )
                for delivery, url, secret in rows
            ]

    async def _deliver(self, delivery: ClaimedDelivery) -> None:
        try:
            result = await self._sender.send(delivery)
            await self._record(delivery, result)
        except asyncio.CancelledError:
            raise
        except Exception:
            # The lease expires and the delivery is retried: at least once, even past a bug here.
            log.exception("webhook delivery crashed", delivery_id=str(delivery.delivery_id))

    async def _record(self, delivery: ClaimedDelivery, result: AttemptResult) -> None:
        """Write the attempt to the log and move the delivery on: delivered, retried later, or abandoned."""
        now = self._clock()
        values: dict[str, object] = {"last_status_code": result.status_code, "last_error": result.error}
        if result.succeeded:
            outcome = "delivered"
            values.update(status="delivered", delivered_at=now, next_attempt_at=now)
        elif result.gone:
            outcome = "abandoned"
            values.update(status="abandoned", next_attempt_at=now)
        else:
            due = self.policy.next_attempt(
                failures=delivery.attempt, created_at=delivery.created_at, now=now, retry_after=result.retry_after
            )
            if due is None:
                outcome = "abandoned"
                values.update(status="abandoned", next_attempt_at=now)
            else:
                outcome = "retry"
                values.update(next_attempt_at=due)
        async with self._db.write() as session:
            moved = await session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery.delivery_id,
                    WebhookDelivery.attempts == delivery.attempt,  # the fence: still our attempt
                    WebhookDelivery.status == "pending",
                )
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            taken_over = not moved.rowcount  # type: ignore[attr-defined]
            if taken_over:
                # Share-locked so a concurrent endpoint delete cannot cascade it away before the insert.
                still_there = await session.scalar(
                    select(WebhookDelivery.id)
                    .where(WebhookDelivery.id == delivery.delivery_id)
                    .with_for_update(read=True, key_share=True)
                )
                if still_there is None:
                    log.info("webhook endpoint deleted during an attempt", delivery_id=str(delivery.delivery_id))
                    return
            session.add(
                WebhookDeliveryAttempt(
                    delivery_id=delivery.delivery_id,
                    attempted_at=result.attempted_at,
                    status_code=result.status_code,
                    error=result.error,
                    duration_ms=result.duration_ms,
                )
            )
            if result.gone:
                await self._disable_endpoint(session, delivery, now)
        if taken_over:
            log.warning("webhook delivery was taken over during the attempt", delivery_id=str(delivery.delivery_id))
            return
        if outcome != "retry":
            self._metrics.webhook_deliveries.labels(outcome).inc()
        if outcome == "abandoned" and not result.gone:
            log.warning(
                "webhook delivery abandoned",
                delivery_id=str(delivery.delivery_id),
                attempts=delivery.attempt,
                error=result.error,
            )

    async def _disable_endpoint(self, session: AsyncSession, delivery: ClaimedDelivery, now: dt.datetime) -> None:
        """410 Gone: the receiver says the subscription is over. Disable the endpoint (with the reason,
        for the API) and abandon everything else queued for it, which would only meet the same 410."""
        await session.execute(
            update(WebhookEndpoint)
            .where(WebhookEndpoint.id == delivery.endpoint_id)
            .values(enabled=False, disabled_reason=f"the endpoint answered 410 Gone on {now.isoformat()}")
            .execution_options(synchronize_session=False)
        )
        await session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.endpoint_id == delivery.endpoint_id, WebhookDelivery.status == "pending")
            .values(status="abandoned", last_error="endpoint disabled after 410 Gone", next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
        log.warning("webhook endpoint disabled after 410 Gone", endpoint_id=str(delivery.endpoint_id))
