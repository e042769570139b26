"""Which replica records which live call: a lease on the call row, renewed while recording.

Any number of ``serve`` processes share one database. A replica may record a call only while it holds
the call's lease (``call.listen_owner`` / ``call.listen_lease_until``). Leases are taken with one
conditional UPDATE (free, expired, or already ours), renewed in bulk every few seconds, and released
when a session ends; a dead replica's leases simply expire and other replicas take its calls over. A
process of the same host (a restart after a crash, ``kill -9`` or a deploy) recognises the leases of a
dead process of its host and takes them over at once (:meth:`LeaseKeeper.take_over_from_dead_processes_here`).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from collections.abc import Collection
from pathlib import Path

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.calls import status as call_status
from service.db.engine import Database
from service.db.models import Call, Recording, utcnow
from service.db.stores import leases as sql


def this_host() -> str:
    return socket.gethostname()[:40]


def replica_id() -> str:
    """A name unique to this process, readable in the database: host, pid, random suffix."""
    return f"{this_host()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def dead_here(owner: str, *, host: str, pid: int) -> bool:
    """Whether the lease owner ``owner`` (a :func:`replica_id`) was a process of this host that no
    longer runs: its pid is gone (or a zombie), or it is our own pid under another name (a container
    restarted, where the service is pid 1 again). A sibling worker of ``serve --workers`` runs: alive.
    A pid reused by an unrelated process reads as alive: the lease
    then simply expires, as on another host."""
    owner_host, _, rest = owner.partition(":")
    owner_pid, _, _ = rest.partition(":")
    if owner_host != host or not owner_pid.isdigit():
        return False
    if int(owner_pid) == pid:
        return True
    try:
        os.kill(int(owner_pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, under another user
        return False
    return _zombie(int(owner_pid))


def _zombie(pid: int) -> bool:
    """Whether ``pid`` has exited but not been reaped yet (``serve --workers``: a killed worker until its
    supervisor waits for it), which ``kill(pid, 0)`` still finds. Linux only; elsewhere: no."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].startswith("Z")


class LeaseKeeper:
    def __init__(self, db: Database, *, owner: str, ttl_seconds: float) -> None:
        self.db = db
        self.owner = owner
        self._ttl = dt.timedelta(seconds=ttl_seconds)

    def held_elsewhere(self, call: Call) -> bool:
        """Whether the loaded ``call`` is leased to another replica, and the lease has not expired."""
        owner, until = call.listen_owner, call.listen_lease_until
        return owner is not None and owner != self.owner and until is not None and until > utcnow()

    async def claim(self, session: AsyncSession, call_id: str) -> bool:
        """Take the call's lease in the caller's transaction (a call just stored or seen live), if it is
        free, expired, or already ours: its session then starts without a write of its own."""
        now = utcnow()
        result = await session.execute(
            sql.ACQUIRE, {"call_id": call_id, "owner": self.owner, "now": now, "until": now + self._ttl}
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def acquire(self, call_id: str) -> bool:
        """Take the call's lease if it is free, expired, or already ours."""
        now = utcnow()
        async with self.db.write() as session:
            result = await session.execute(
                sql.ACQUIRE, {"call_id": call_id, "owner": self.owner, "now": now, "until": now + self._ttl}
            )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def renew(self, call_ids: Collection[str]) -> set[str]:
        """Extend our leases on ``call_ids``; returns the ones we still hold."""
        if not call_ids:
            return set()
        async with self.db.write() as session:
            result = await session.execute(
                sql.RENEW, {"call_ids": list(call_ids), "owner": self.owner, "until": utcnow() + self._ttl}
            )
            return set(result.scalars().all())

    async def release(self, call_id: str) -> None:
        async with self.db.write() as session:
            await session.execute(sql.RELEASE, {"call_id": call_id, "owner": self.owner})

    async def take_over_from_dead_processes_here(self, limit: int = 500) -> list[str]:
        """Take the leases that a dead process of this host still holds (a crash, ``kill -9``, a
        container restart) at once, rather than when they expire; the calls taken."""
        async with self.db.read() as session:
            held = (await session.execute(held_on_host_query(this_host(), utcnow(), limit))).tuples().all()
        host, pid = this_host(), os.getpid()
        dead = [
            (call_id, owner)
            for call_id, owner in held
            if owner and owner != self.owner and dead_here(owner, host=host, pid=pid)
        ]
        if not dead:
            return []
        taken = []
        until = utcnow() + self._ttl
        async with self.db.write() as session:
            for call_id, owner in dead:
                result = await session.execute(
                    sql.TAKE_OVER, {"call_id": call_id, "dead": owner, "owner": self.owner, "until": until}
                )
                if result.rowcount:  # type: ignore[attr-defined]
                    taken.append(call_id)
        return taken

    async def unowned_calls(self, limit: int = 500) -> list[str]:
        """Calls that need a session and that nobody holds (see :func:`unowned_calls_query`)."""
        async with self.db.read() as session:
            return list((await session.scalars(unowned_calls_query(utcnow(), limit))).all())


def _needs_a_session() -> ColumnElement[bool]:
    """Live calls with a listen URL, and ended calls whose recording was never finalised."""
    unfinished = select(Recording.call_id).where(Recording.status == "recording")
    return and_(Call.listen_url.is_not(None), or_(Call.status.in_(call_status.LIVE), Call.id.in_(unfinished)))


def held_on_host_query(host: str, now: dt.datetime, limit: int) -> Select[tuple[str, str | None]]:
    """Calls that need a session whose unexpired lease a process of ``host`` holds."""
    return (
        select(Call.id, Call.listen_owner)
        .where(
            _needs_a_session(),
            Call.listen_owner.startswith(f"{host}:", autoescape=True),
            Call.listen_lease_until >= now,
        )
        .order_by(Call.created_at)
        .limit(limit)
    )


def unowned_calls_query(now: dt.datetime, limit: int) -> Select[tuple[str]]:
    """Calls that need a session and that nobody holds (never leased, released, or expired): live calls
    with a listen URL, and ended calls whose recording was never finalised (their session crashed or
    their replica died after the end). Indexed on both sides: it runs every few seconds per replica."""
    return (
        select(Call.id)
        .where(_needs_a_session(), or_(Call.listen_owner.is_(None), Call.listen_lease_until < now))
        .order_by(Call.created_at)
        .limit(limit)
    )
