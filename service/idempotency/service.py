"""Idempotent POSTs.

The first request with a key claims it by inserting a row (``in_flight``) in its own committed
transaction, so a concurrent duplicate finds the claim and gets 409 instead of reaching Vapi a second
time. When the first request finishes, its response (success or problem document) is stored and
replayed for every retry with the same body for 24 hours; the same key with another body is 422.
A claim left ``in_flight`` by a crashed process is given up after ``STALE_AFTER``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from litestar import Response
from sqlalchemy import delete, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from service.db.engine import Database, is_postgresql
from service.db.models import IdempotencyRecord, utcnow
from service.errors import PROBLEM_JSON, ConflictError, DomainError, InvalidInputError, problem_body

HEADER = "Idempotency-Key"
TTL = dt.timedelta(hours=24)
STALE_AFTER = dt.timedelta(seconds=60)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True, slots=True)
class StoredResponse:
    status: int
    body: Any
    replayed: bool = False

    def to_response(self) -> Response[Any]:
        media_type = PROBLEM_JSON if self.status >= 400 else "application/json"
        headers = {"Idempotent-Replayed": "true"} if self.replayed else {}
        return Response(self.body, status_code=self.status, media_type=media_type, headers=headers)


class IdempotencyService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def run(
        self,
        *,
        principal: str,
        route: str,
        key: str | None,
        request: Any,
        status: int,
        handler: Callable[[], Awaitable[Any]],
    ) -> StoredResponse:
        """Run ``handler`` once per (principal, route, key); its result is encoded with msgspec."""
        if key is None:
            return StoredResponse(status, msgspec.to_builtins(await handler()))
        if not key or len(key) > MAX_KEY_LENGTH:
            raise InvalidInputError(f"{HEADER} must be 1 to {MAX_KEY_LENGTH} characters")
        request_hash = hashlib.sha256(msgspec.json.encode(request, order="sorted")).hexdigest()
        replay = await self._claim(principal, route, key, request_hash)
        if replay is not None:
            return replay
        try:
            response = StoredResponse(status, msgspec.to_builtins(await handler()))
        except DomainError as exc:
            response = StoredResponse(exc.status_code, problem_body(exc))
            await self._finish(principal, route, key, response)
            raise
        except BaseException:
            # Not a deliberate answer (a bug, a cancellation): free the key so a retry can run.
            await self._release(principal, route, key)
            raise
        await self._finish(principal, route, key, response)
        return response

    async def _claim(self, principal: str, route: str, key: str, request_hash: str) -> StoredResponse | None:
        now = utcnow()
        async with self._db.write() as session:
            insert = pg_insert if is_postgresql(session) else sqlite_insert
            claimed = await session.execute(
                insert(IdempotencyRecord)
                .values(
                    principal=principal,
                    route=route,
                    key=key,
                    request_hash=request_hash,
                    status="in_flight",
                    created_at=now,
                    expires_at=now + TTL,
                )
                .on_conflict_do_nothing()
            )
            if claimed.rowcount:  # type: ignore[attr-defined]
                return None
            record = await session.scalar(
                select(IdempotencyRecord)
                .where(
                    IdempotencyRecord.principal == principal,
                    IdempotencyRecord.route == route,
                    IdempotencyRecord.key == key,
                )
                .with_for_update()
            )
            assert record is not None  # the insert conflicted with it
            stale = record.status == "in_flight" and now - record.created_at > STALE_AFTER
            if record.expires_at <= now or stale:
                record.request_hash, record.status, record.created_at = request_hash, "in_flight", now
                record.expires_at, record.response_status, record.response_body = now + TTL, None, None
                return None
            if record.request_hash != request_hash:
                raise InvalidInputError(f"this {HEADER} was used with a different request body")
            if record.status == "in_flight":
                raise ConflictError(f"a request with this {HEADER} is still in progress; retry later")
            return StoredResponse(record.response_status or 200, record.response_body, replayed=True)

    async def _finish(self, principal: str, route: str, key: str, response: StoredResponse) -> None:
        async with self._db.write() as session:
            record = await session.get(IdempotencyRecord, (principal, route, key))
            if record is not None:
                record.status, record.response_status, record.response_body = "done", response.status, response.body

    async def _release(self, principal: str, route: str, key: str) -> None:
        async with self._db.write() as session:
            await session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.principal == principal,
                    IdempotencyRecord.route == route,
                    IdempotencyRecord.key == key,
                    IdempotencyRecord.status == "in_flight",
                )
            )

    async def purge_expired(self) -> int:
        async with self._db.write() as session:
            result = await session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= utcnow()))
            return int(result.rowcount)  # type: ignore[attr-defined]
