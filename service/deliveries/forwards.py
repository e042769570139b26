"""The tap's durable queue: server messages passed on to a call's upstream (contract section 9).

A sibling of the outbound-webhook outbox, with three differences. The body is the raw JSON Vapi sent,
not an event of Switchboard's; it is sent with the upstream's own headers, as Vapi would have sent it,
never signed with Standard Webhooks. And a call's forwards go out strictly in order: only the oldest
pending forward of a call is ever claimed, so the next one waits until the previous is delivered or
abandoned. Rows are written in the webhook's own transaction (:func:`enqueue_forward`), so a stored
message is forwarded at least once, from any replica, after any restart.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import structlog
from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from service.db.engine import Database
from service.db.models import Call, UpstreamForward, utcnow
from service.deliveries.retry import RetryPolicy
from service.metrics import Metrics
from service.tasks import TaskOwner, run_claim_loop

log = structlog.get_logger(__name__)

ERROR_EXCERPT = 300
HeadersOf = Callable[[Mapping[str, Any]], dict[str, str]]


def enqueue_forward(session: AsyncSession, *, call_id: str, seq: int | None, message_type: str, body: bytes) -> None:
    """Queue one raw server message for the call's upstream, in the caller's transaction."""
    now = utcnow()
    session.add(
        UpstreamForward(
            call_id=call_id,
            seq=seq,
            message_type=message_type,
            body=body.decode(),
            status="pending",
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            updated_at=now,
        )
    )


@dataclass(frozen=True, slots=True)
class ClaimedForward:
    forward_id: int
    url: str
    headers: dict[str, str]
    body: bytes
    created_at: dt.datetime
    attempt: int  # the fencing token, as in the outbound-webhook worker


_EARLIER = aliased(UpstreamForward)
# The oldest pending forward of each call: a later one waits for it (order per call).
_IS_HEAD = ~exists(
    select(_EARLIER.id).where(
        and_(
            _EARLIER.call_id == UpstreamForward.call_id,
            _EARLIER.status == "pending",
            _EARLIER.id < UpstreamForward.id,
        )
    )
)


class ForwardWorker:
    """Sends queued forwards until closed (``start()`` / ``close(timeout)`` in the app's lifespan)."""

    def __init__(
        self,
        db: Database,
        http: httpx.AsyncClient,
        *,
        headers_of: HeadersOf,
        default_upstream: Mapping[str, Any] | None,
        policy: RetryPolicy,
        timeout: float,
        concurrency: int = 16,
        lease: dt.timedelta = dt.timedelta(seconds=60),
        poll_interval: float = 1.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._db = db
        self._metrics = metrics
        self._http = http
        self._headers_of = headers_of  # the upstream's headers as Vapi sends them (calls.upstream)
        self._default = dict(default_upstream) if default_upstream else None
        self.policy = policy
        self._timeout = timeout
        self._lease = max(lease, dt.timedelta(seconds=timeout * 3))
        self._poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._claimer = TaskOwner("upstream-forwards")
        self._attempts = TaskOwner("upstream-forward", limit=concurrency, on_done=self._wake.set)
        self._closing = False

    def wake(self) -> None:
        """Look for due forwards now (called after a transaction that queued some commits)."""
        self._wake.set()

    async def start(self) -> None:
        self._claimer.spawn(self._run(), name="claim")

    async def close(self, timeout: float) -> None:
        """Claim nothing more, let attempts finish within ``timeout``; a cancelled one is retried after
        its lease, by this or another replica."""
        self._closing = True
        self._wake.set()
        await self._claimer.close(timeout)
        await self._attempts.close(timeout)

    async def _run(self) -> None:
        await run_claim_loop(
            "upstream forward",
            workers=self._attempts,
            wake=self._wake,
            poll_interval=self._poll_interval,
            closing=lambda: self._closing,
            claim=self._claim,
            work=lambda forward: (self._deliver(forward), str(forward.forward_id)),
            next_due_in=self._next_due_in,
        )

    async def _next_due_in(self) -> float | None:
        async with self._db.read() as session:
            due: dt.datetime | None = await session.scalar(
                select(func.min(UpstreamForward.next_attempt_at)).where(UpstreamForward.status == "pending")
            )
        return None if due is None else (due - utcnow()).total_seconds()

    async def _claim(self, limit: int) -> list[ClaimedForward]:
        now = utcnow()
        async with self._db.write() as session:
            rows = (
                await session.execute(
                    select(UpstreamForward, Call.upstream)
                    .join(Call, Call.id == UpstreamForward.call_id)
                    .where(UpstreamForward.status == "pending", UpstreamForward.next_attempt_at <= now, _IS_HEAD)
                    .order_by(UpstreamForward.id)
                    .limit(limit)
                    .with_for_update(of=UpstreamForward, skip_locked=True)
                )
            ).all()
            if not rows:
                return []
            await session.execute(
                update(UpstreamForward)
                .where(UpstreamForward.id.in_([forward.id for forward, _ in rows]))
                .values(attempts=UpstreamForward.attempts + 1, next_attempt_at=now + self._lease)
                .execution_options(synchronize_session=False)
            )
            claimed = []
            for forward, stored in rows:
                upstream = stored or self._default
                if upstream is None:  # the upstream was removed: nothing to send to
                    await self._settle(session, forward.id, forward.attempts + 1, "abandoned", None, "no upstream")
                    continue
                claimed.append(
                    ClaimedForward(
                        forward.id,
                        upstream["url"],
                        self._headers_of(upstream),
                        forward.body.encode(),
                        forward.created_at,
                        forward.attempts + 1,
                    )
                )
            return claimed

    async def _deliver(self, forward: ClaimedForward) -> None:
        status: int | None = None
        error: str | None = None
        try:
            async with asyncio.timeout(self._timeout):  # the whole exchange: httpx's timeout bounds each phase
                response = await self._http.post(
                    forward.url, content=forward.body, headers=forward.headers, timeout=self._timeout
                )
            status = response.status_code
            if not response.is_success:
                error = f"HTTP {status}: {response.text[:ERROR_EXCERPT]}"
        except TimeoutError:
            error = f"no answer within {self._timeout:g} s"
        except Exception as exc:  # also a URL or header value httpx cannot send: settled
            # like any failed attempt (retried, then abandoned), never left to block the call's next forwards
            error = f"{type(exc).__name__}: {str(exc)[:ERROR_EXCERPT] or 'no answer within the timeout'}"
        now = utcnow()
        if error is None:
            outcome, due = "delivered", now
        else:
            retry_at = self.policy.next_attempt(failures=forward.attempt, created_at=forward.created_at, now=now)
            outcome, due = ("pending", retry_at) if retry_at is not None else ("abandoned", now)
            log.info("upstream forward failed", forward_id=forward.forward_id, outcome=outcome, error=error)
        if self._metrics is not None:
            self._metrics.upstream_forwards.labels("retry" if outcome == "pending" else outcome).inc()
        try:
            async with self._db.write() as session:
                await self._settle(session, forward.forward_id, forward.attempt, outcome, status, error, due=due)
        except Exception:  # the lease expires and it is sent again: at least once
            log.exception("recording an upstream forward failed", forward_id=forward.forward_id)
        self._wake.set()  # the call's next forward may go now

    @staticmethod
    async def _settle(
        session: AsyncSession,
        forward_id: int,
        attempt: int,
        outcome: str,
        status: int | None,
        error: str | None,
        *,
        due: dt.datetime | None = None,
    ) -> None:
        now = utcnow()
        await session.execute(
            update(UpstreamForward)
            .where(UpstreamForward.id == forward_id, UpstreamForward.attempts == attempt)
            .values(
                status=outcome,
                last_status_code=status,
                last_error=error,
                next_attempt_at=due or now,
                delivered_at=now if outcome == "delivered" else None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )


async def list_forwards(session: AsyncSession, call_id: str, *, limit: int) -> list[UpstreamForward]:
    """A call's forwards, oldest first: the delivery log of its upstream."""
    query = select(UpstreamForward).where(UpstreamForward.call_id == call_id).order_by(UpstreamForward.id)
    return list((await session.scalars(query.limit(limit))).all())
