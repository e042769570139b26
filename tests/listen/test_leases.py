"""Leases: the query every replica runs every few seconds stays indexed; a restarted process takes over
the leases of a dead process of its own host at once."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import create_async_engine

from service.db.engine import Database
from service.db.models import Call, utcnow
from service.listen.leases import LeaseKeeper, dead_here, replica_id, this_host, unowned_calls_query


async def test_unowned_calls_are_found_through_indexes_not_a_scan_of_every_recording(sqlite_url: str) -> None:
    engine = create_async_engine(sqlite_url)
    try:
        statement = unowned_calls_query(utcnow(), 500)
        sql = str(statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
        async with engine.connect() as connection:
            plan = [str(row[-1]) for row in await connection.execute(text(f"EXPLAIN QUERY PLAN {sql}"))]
    finally:
        await engine.dispose()
    assert any("ix_recording_status" in step for step in plan), plan
    assert any("ix_call_status_created_at" in step for step in plan), plan
    assert not any(step.startswith("SCAN") for step in plan), plan


def finished_pid() -> int:
    """The pid of a process that has run and ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_dead_process_of_this_host_is_recognised_by_its_lease_owner() -> None:
    child = finished_pid()
    alive = os.getppid()  # the test runner's parent: surely running
    assert dead_here(f"host-a:{child}:abcd1234", host="host-a", pid=os.getpid())
    assert not dead_here(f"host-a:{alive}:abcd1234", host="host-a", pid=os.getpid())
    # Our own pid under another name: the process that held it was restarted (a container's pid 1).
    assert dead_here(f"host-a:{os.getpid()}:00000000", host="host-a", pid=os.getpid())
    assert not dead_here(f"host-b:{child}:abcd1234", host="host-a", pid=os.getpid()), "other hosts: expiry"
    assert not dead_here("garbage", host="host-a", pid=os.getpid())


def test_a_killed_sibling_not_yet_reaped_is_dead_and_a_running_one_alive() -> None:
    """``serve --workers``: a worker killed with SIGKILL is a zombie until its supervisor waits for it."""
    sibling = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        owner = f"host-a:{sibling.pid}:abcd1234"
        assert not dead_here(owner, host="host-a", pid=os.getpid()), "a running sibling keeps its leases"
        sibling.kill()
        deadline = time.monotonic() + 10
        while not Path(f"/proc/{sibling.pid}/stat").read_text().split(") ")[1].startswith("Z"):
            assert time.monotonic() < deadline, "the killed child became a zombie"
            time.sleep(0.01)
        assert dead_here(owner, host="host-a", pid=os.getpid()), "exited, not yet reaped: dead"
    finally:
        sibling.kill()
        sibling.wait()


async def test_leases_of_dead_processes_here_are_taken_over_before_they_expire(database_url: str) -> None:
    db = Database(database_url)
    child = finished_pid()
    until = utcnow() + dt.timedelta(minutes=5)
    owners = {
        "dead-here": f"{this_host()}:{child}:deadbeef",
        "alive-here": f"{this_host()}:{os.getppid()}:0badc0de",
        "elsewhere": f"other-host:{child}:deadbeef",
    }
    try:
        async with db.write() as session:
            for call_id, owner in owners.items():
                session.add(
                    Call(
                        id=call_id,
                        status="in-progress",
                        listen_url=f"ws://127.0.0.1:1/{call_id}",
                        listen_owner=owner,
                        listen_lease_until=until,
                    )
                )
        keeper = LeaseKeeper(db, owner=replica_id(), ttl_seconds=5)
        assert await keeper.take_over_from_dead_processes_here() == ["dead-here"]
        assert await keeper.take_over_from_dead_processes_here() == [], "our own leases are not taken again"
        async with db.read() as session:
            held = dict((await session.execute(select(Call.id, Call.listen_owner))).tuples().all())
        assert held == {**owners, "dead-here": keeper.owner}
    finally:
        await db.dispose()
