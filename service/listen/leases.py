"""Which replica records which live call: a lease on the call row, renewed while recording.

Any number of ``serve`` processes share one database. A replica may record a call only while it holds
the call's lease (``call.listen_owner`` / ``call.listen_lease_until``). Leases are taken with one
conditional UPDATE (free, expired, or already ours), renewed in bulk every few seconds, and released
when a session ends; a dead replica's leases simply expire and other replicas take its calls over.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Collection

from sqlalchemy import Select, bindparam, or_, select, update

from service.calls import status as call_status
from service.db.engine import Database
from service.db.models import Call, Recording, utcnow
from service.db.statements import table_of

# Core statements on the call table, compiled once (ORM-enabled updates cost several times more).
_CALL = table_of(Call)
_OURS = _CALL.c.listen_owner == bindparam("owner")
_ACQUIRE = (
    update(_CALL)
    .where(
        _CALL.c.id == bindparam("call_id"),
        or_(_CALL.c.listen_owner.is_(None), _OURS, _CALL.c.listen_lease_until < bindparam("now")),
    )
    .values(listen_owner=bindparam("owner"), listen_lease_until=bindparam("until"))
)
# The rows are locked in id order first (PostgreSQL; SQLite has one writer), as every writer of
# several calls does: an UPDATE of an IN list locks them in whatever order its plan visits them.
_OURS_IN_ORDER = (
    select(_CALL.c.id)
    .where(_CALL.c.id.in_(bindparam("call_ids", expanding=True)), _OURS)
    .order_by(_CALL.c.id)
    .with_for_update()
)
_RENEW = (
    update(_CALL)
    .where(_CALL.c.id.in_(_OURS_IN_ORDER.scalar_subquery()), _OURS)
    .values(listen_lease_until=bindparam("until"))
    .returning(_CALL.c.id)
)
_RELEASE = (
    update(_CALL).where(_CALL.c.id == bindparam("call_id"), _OURS).values(listen_owner=None, listen_lease_until=None)
)


def replica_id() -> str:
    """A name unique to this process, readable in the database: host, pid, random suffix."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaseKeeper:
    def __init__(self, db: Database, *, owner: str, ttl_seconds: float) -> None:
        self.db = db
        self.owner = owner
        self._ttl = dt.timedelta(seconds=ttl_seconds)

    def claim(self, call: Call) -> None:
        """Take the lease of a call this replica is storing right now, in the caller's transaction
        (a call just placed here): its session then starts without a write of its own."""
        call.listen_owner, call.listen_lease_until = self.owner, utcnow() + self._ttl

    async def acquire(self, call_id: str) -> bool:
        """Take the call's lease if it is free, expired, or already ours."""
        now = utcnow()
        async with self.db.write() as session:
            result = await session.execute(
                _ACQUIRE, {"call_id": call_id, "owner": self.owner, "now": now, "until": now + self._ttl}
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def renew(self, call_ids: Collection[str]) -> set[str]:
        """Extend our leases on ``call_ids``; returns the ones we still hold."""
        if not call_ids:
            return set()
        async with self.db.write() as session:
            result = await session.execute(
                _RENEW, {"call_ids": list(call_ids), "owner": self.owner, "until": utcnow() + self._ttl}
            )
            return set(result.scalars().all())

    async def release(self, call_id: str) -> None:
        async with self.db.write() as session:
            await session.execute(_RELEASE, {"call_id": call_id, "owner": self.owner})

    async def unowned_calls(self, limit: int = 500) -> list[str]:
        """Calls that need a session and that nobody holds (see :func:`unowned_calls_query`)."""
        async with self.db.read() as session:
            return list((await session.scalars(unowned_calls_query(utcnow(), limit))).all())


def unowned_calls_query(now: dt.datetime, limit: int) -> Select[tuple[str]]:
    """Calls that need a session and that nobody holds (never leased, released, or expired): live calls
    with a listen URL, and ended calls whose recording was never finalised (their session crashed or
    their replica died after the end). Indexed on both sides: it runs every few seconds per replica."""
    unfinished = select(Recording.call_id).where(Recording.status == "recording")
    return (
        select(Call.id)
        .where(
            Call.listen_url.is_not(None),
            or_(Call.status.in_(call_status.LIVE), Call.id.in_(unfinished)),
            or_(Call.listen_owner.is_(None), Call.listen_lease_until < now),
        )
        .order_by(Call.created_at)
        .limit(limit)
    )
