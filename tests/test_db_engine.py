"""The SQLite write path: statements on the loop's thread, checkpoints in a worker thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from service.db import engine as db_engine
from service.db.engine import Database
from service.db.migrate import upgrade
from service.db.models import Call
from service.errors import database_unavailable
from tests.harness import eventually


@pytest.fixture
async def sqlite_file(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'switchboard.db'}"
    await asyncio.to_thread(upgrade, url)
    return url


async def sqlite_thread(session: AsyncSession) -> int:
    """The thread SQLite runs this session's statements on (a SQL function reports it)."""
    driver = (await (await session.connection()).get_raw_connection()).driver_connection
    assert driver is not None
    await driver.create_function("thread_ident", 0, threading.get_ident)
    return int((await session.execute(text("SELECT thread_ident()"))).scalar_one())


async def test_writes_run_on_the_loop_thread_and_reads_in_a_worker(sqlite_file: str) -> None:
    db = Database(sqlite_file)
    try:
        async with db.write() as session:
            session.add(Call(id="call-1", status="queued", origin="api"))
            writer = await sqlite_thread(session)
            autocheckpoint = (await session.execute(text("PRAGMA wal_autocheckpoint"))).scalar_one()
        async with db.read() as session:
            assert (await session.scalars(select(Call.id))).all() == ["call-1"]
            reader = await sqlite_thread(session)
    finally:
        await db.dispose()
    assert writer == threading.get_ident()
    assert reader != threading.get_ident()
    assert autocheckpoint == 0, "the write connection never checkpoints (an fsync on the event loop)"


def file_size(path: Path) -> int:
    return path.stat().st_size


async def test_the_wal_is_checkpointed_in_the_background(sqlite_file: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(db_engine, "CHECKPOINT_EVERY_SECONDS", 0.0)
    path = Path(sqlite_file.removeprefix("sqlite+aiosqlite:///"))
    db = Database(sqlite_file)
    before = file_size(path)
    try:
        for n in range(200):
            async with db.write() as session:
                session.add(Call(id=f"call-{n}", status="queued", origin="api", customer={"name": "x" * 2000}))
        # The WAL holds the rows until a checkpoint copies them into the main file.
        await eventually(lambda: file_size(path) > before + 200 * 2000, what="a checkpoint ran")
    finally:
        await db.dispose()
    assert file_size(path) > before + 200 * 2000, "the rows reached the main database file"
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT count(*) FROM call WHERE id LIKE 'call-%'").fetchone() == (200,)


async def test_a_write_lock_held_elsewhere_fails_as_database_unavailable(
    sqlite_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """BEGIN IMMEDIATE goes to sqlite3 directly; "database is locked" must still come out as SQLAlchemy's
    OperationalError, which callers (503 answers, listen bookkeeping retries) take as "unavailable"."""
    monkeypatch.setattr(db_engine, "SQLITE_BUSY_TIMEOUT_MS", 50)
    db = Database(sqlite_file)
    other = sqlite3.connect(sqlite_file.removeprefix("sqlite+aiosqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing (a CLI, a migration, a backup)
    try:
        with pytest.raises(OperationalError, match="database is locked") as caught:
            async with db.write() as session:
                await session.execute(text("SELECT 1"))
        assert database_unavailable(caught.value)
    finally:
        other.rollback()
        other.close()
    async with db.write() as session:  # the connection went back to the pool usable
        assert await session.scalar(text("SELECT 1")) == 1
    await db.dispose()


async def test_urgent_writers_go_before_ordinary_ones_waiting(sqlite_file: str) -> None:
    """The webhook batch (urgent) does not queue behind the bookkeeping writers already waiting; within
    a lane writers keep their order, and a waiter cancelled leaves the queue without stalling it."""
    db = Database(sqlite_file)
    order: list[str] = []
    holding = asyncio.Event()
    release = asyncio.Event()

    async def write(name: str, *, urgent: bool = False) -> None:
        async with db.write(urgent=urgent) as session:
            await session.execute(text("SELECT 1"))
            order.append(name)
            if name == "first":
                holding.set()
                await release.wait()

    try:
        first = asyncio.create_task(write("first"))
        await holding.wait()
        tasks = [asyncio.create_task(write(f"ordinary-{n}")) for n in range(3)]
        await asyncio.sleep(0)
        cancelled = asyncio.create_task(write("cancelled", urgent=True))
        await asyncio.sleep(0)
        tasks += [asyncio.create_task(write(f"urgent-{n}", urgent=True)) for n in range(2)]
        await asyncio.sleep(0)
        cancelled.cancel()
        release.set()
        await asyncio.gather(first, *tasks)
        assert cancelled.cancelled()
        assert order == ["first", "urgent-0", "urgent-1", "ordinary-0", "ordinary-1", "ordinary-2"]
        async with db.write() as session:  # the lock is free again
            await session.execute(text("SELECT 1"))
    finally:
        await db.dispose()


async def test_a_burst_of_reads_queues_for_a_fixed_set_of_connections(sqlite_file: str) -> None:
    """Each SQLite read connection is a thread with its own page cache: a burst of reads (200 ended
    calls checking their status) waits for one of a few, instead of opening (and later closing) more."""
    db = Database(sqlite_file)
    threads: set[int] = set()

    async def read() -> None:
        async with db.read() as session:
            threads.add(await sqlite_thread(session))
            await session.execute(select(Call.id))

    try:
        await asyncio.gather(*(read() for _ in range(50)))
    finally:
        await db.dispose()
    assert len(threads) <= db_engine.SQLITE_READ_CONNECTIONS
