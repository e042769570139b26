"""The database handle: engines and short units of work.

SQLite (the embedded default) runs in WAL mode with a busy timeout. Write transactions start with
``BEGIN IMMEDIATE`` so that two writers queue on the busy timeout instead of failing when one upgrades
a read snapshot to a write; reads keep SQLite's deferred transactions and never block writers.
On PostgreSQL both handles share one engine.

SQLite writes run on the event loop's thread. Through aiosqlite every statement costs three or four
hand-offs to its worker thread and back (~100 µs each, more when the loop is busy), several times
what the statement itself costs (tens of µs: small rows, WAL, ``synchronous=NORMAL``, no fsync at
commit). Writes are serialised by one lock anyway, so the thread bought no concurrency. The one slow
part of a WAL write, the checkpoint (fsync), is taken off the write path: the write connection never
checkpoints; a background thread does, on its own connection, without blocking writers or readers.
Reads keep aiosqlite's thread: a list query may scan for milliseconds and must not stall the loop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import msgspec
import structlog
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 10_000
SQLITE_READ_CONNECTIONS = 5  # reads in flight at once on a SQLite file (the rest wait for a connection)
CHECKPOINT_EVERY_SECONDS = 1.0
# JSON columns (event payloads, call documents) through msgspec: ~10x faster than the json module.
JSON_CODEC: dict[str, Any] = {
    "json_serializer": lambda value: msgspec.json.encode(value).decode(),
    "json_deserializer": msgspec.json.decode,
}
_in_write: contextvars.ContextVar[bool] = contextvars.ContextVar("in_sqlite_write", default=False)
log = structlog.get_logger(__name__)


class WriteLock:
    """SQLite's one writer, queued in the event loop: a FIFO lock with an urgent lane.

    Urgent writers (the webhook batch, which records the milestones that rules answer) go before every
    waiting ordinary one (segments, leases, journals, the outbox): the time from a webhook to its
    firing's control POST does not grow with the bookkeeping queued at that moment. Within a lane,
    first come first served; nobody barges past a waiter."""

    def __init__(self) -> None:
        self._held = False
        self._lanes: tuple[collections.deque[asyncio.Future[None]], ...] = (collections.deque(), collections.deque())

    @property
    def waiting(self) -> int:
        return sum(len(lane) for lane in self._lanes)

    async def acquire(self, *, urgent: bool = False) -> None:
        if not self._held and not self.waiting:
            self._held = True
            return
        lane = self._lanes[0 if urgent else 1]
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        lane.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.release()  # handed over just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    lane.remove(turn)
            raise

    def release(self) -> None:
        """Hand the lock to the first waiter of the urgent lane, else of the ordinary one."""
        for lane in self._lanes:
            while lane:
                turn = lane.popleft()
                if not turn.done():
                    turn.set_result(None)  # still held: it passes to that waiter
                    return
        self._held = False


class _InlineConnection(aiosqlite.Connection):
    """aiosqlite's connection API, executed directly on the calling (event loop) thread.

    SQLAlchemy's aiosqlite dialect drives the connection through ``_execute``; running each call in
    place instead of queueing it to a worker thread is the whole difference (see the module docstring).
    """

    def __await__(self) -> Generator[Any, None, aiosqlite.Connection]:
        return self._connect().__await__()  # no worker thread to start

    async def _connect(self) -> aiosqlite.Connection:
        if self._connection is None:
            self._connection = self._connector()
        return self

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if not self._running or self._connection is None:
            raise ValueError("Connection closed")
        return fn(*args, **kwargs)

    def stop(self) -> None:  # nothing to wait for: no thread
        self._running = False
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    async def close(self) -> None:
        self.stop()


def _inline_sqlite_creator(path: str) -> Callable[[], aiosqlite.Connection]:
    connect = functools.partial(
        sqlite3.connect,
        path,
        timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
        isolation_level=None,  # SQLAlchemy, not the driver, decides when transactions begin
        check_same_thread=False,  # the pool may close it from the garbage collector's thread
    )
    return lambda: _InlineConnection(connect, iter_chunk_size=64)


def sqlite_file(url: str) -> str | None:
    """The file a SQLite URL names; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return parsed.database


def _sqlite_engine(url: str, *, immediate: bool) -> AsyncEngine:
    database = sqlite_file(url) if immediate else None  # writes to a file run inline (module docstring)
    inline = database is not None
    if database is not None:
        engine = create_async_engine(url, async_creator=_inline_sqlite_creator(database), **JSON_CODEC)
    else:
        # Reads of a file: a fixed pool, no overflow. Each aiosqlite connection is a thread of its own
        # with its own SQLite page cache, schema and malloc arena; the default overflow of 10 opened
        # (and closed) ten more whenever reads came in a burst, e.g. the ended sessions of 200 calls
        # checking their call's status together, growing the process by megabytes that it kept. A
        # burst of reads queues for a connection instead: they take a millisecond each. (In-memory
        # SQLite keeps SQLAlchemy's pool of one shared connection.)
        pool = {"pool_size": SQLITE_READ_CONNECTIONS, "max_overflow": 0} if sqlite_file(url) is not None else {}
        engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, **pool, **JSON_CODEC)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        if dbapi_connection.isolation_level is not None:
            dbapi_connection.isolation_level = None  # let SQLAlchemy, not the driver, begin transactions
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        if inline:
            cursor.execute("PRAGMA wal_autocheckpoint=0")  # see _checkpoints: never fsync on the loop
        cursor.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        if not inline:
            connection.exec_driver_sql(begin)
            return
        # Straight to sqlite3 on this thread (a statement with no result needs none of SQLAlchemy's
        # execution machinery), failing as SQLAlchemy would: "database is locked" after the busy
        # timeout must stay an OperationalError, which callers treat as "database unavailable".
        sqlite = connection.connection.driver_connection._connection  # the _InlineConnection's sqlite3
        try:
            sqlite.execute(begin)
        except sqlite3.Error as exc:
            raise OperationalError(begin, None, exc) from exc

    return engine


def _checkpoint(path: str) -> None:
    """A passive checkpoint on a connection of its own: copies what it can, never blocks anyone."""
    with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)) as connection:
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")


def ensure_sqlite_directory(url: str) -> None:
    """Create the folder of a SQLite file so that the embedded default works on a fresh machine."""
    if (database := sqlite_file(url)) is not None:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def is_postgresql(session: AsyncSession) -> bool:
    """Whether ``session`` talks to PostgreSQL (else SQLite): the one place that tells them apart
    where a statement differs (row locks, upserts)."""
    return session.bind.dialect.name == "postgresql"


class Database:
    """Engines plus ``read()`` / ``write()`` units of work; one per app."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        if self.is_sqlite:
            ensure_sqlite_directory(url)
            self.write_engine = _sqlite_engine(url, immediate=True)
            self.read_engine = _sqlite_engine(url, immediate=False)
        else:
            self.write_engine = create_async_engine(
                url, pool_size=10, max_overflow=10, pool_pre_ping=True, **JSON_CODEC
            )
            self.read_engine = self.write_engine
        self._write_sessions = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._write_lock = WriteLock() if self.is_sqlite else None
        self._read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)
        # A SQLite file: its writes run inline on the loop (see _sqlite_engine), its WAL is checkpointed.
        self._checkpoint_path = sqlite_file(url)
        self._checkpointed_at = 0.0
        self._checkpointing: asyncio.Task[None] | None = None
        self._after_commit: list[Callable[[dict[str, Any]], None]] = []

    def after_commit(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(session.info)`` after every write transaction that committed (on the event
        loop, right after the commit): how a writer's notes about its transaction (e.g. the calls it
        touched) reach whoever publishes them. Must not block."""
        self._after_commit.append(callback)

    def _committed(self, session: AsyncSession) -> None:
        for callback in self._after_commit:
            try:
                callback(session.info)
            except Exception:
                log.exception("after-commit callback failed")

    @asynccontextmanager
    async def write(self, *, urgent: bool = False) -> AsyncIterator[AsyncSession]:
        """One write transaction: committed when the block exits normally, rolled back otherwise.

        On SQLite only one writer can proceed anyway; queueing writers on an asyncio lock instead of
        in SQLite's busy handler (which sleeps and polls) keeps the latency tail short. ``urgent``: go
        before every ordinary writer waiting (:class:`WriteLock`); PostgreSQL has no such queue.
        """
        if self._write_lock is None:
            async with self._write_sessions() as session, session.begin():
                yield session
            self._committed(session)
            return
        if _in_write.get():
            raise RuntimeError("nested write transaction: it would wait for itself on SQLite")
        token = _in_write.set(True)
        try:
            await self._write_lock.acquire(urgent=urgent)
            try:
                if self._checkpoint_path is None:  # in-memory SQLite: writes go through aiosqlite's thread
                    async with self._write_sessions() as session, session.begin():
                        yield session
                    self._committed(session)
                else:
                    # AsyncSession's own ``async with`` closes in a shielded task (a task and two more
                    # loop turns per transaction); on the inline connection nothing in close() suspends,
                    # so it cannot be interrupted half-way and is awaited directly.
                    session = self._write_sessions()
                    try:
                        async with session.begin():
                            yield session
                    finally:
                        await session.close()
                    self._committed(session)
            finally:
                self._write_lock.release()
        finally:
            _in_write.reset(token)
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        """At most every :data:`CHECKPOINT_EVERY_SECONDS` after writes: a checkpoint in a worker thread."""
        now = time.monotonic()
        if self._checkpoint_path is None or self._checkpointing is not None:
            return
        if now - self._checkpointed_at < CHECKPOINT_EVERY_SECONDS:
            return
        self._checkpointed_at = now
        task = asyncio.create_task(asyncio.to_thread(_checkpoint, self._checkpoint_path), name="sqlite-checkpoint")
        task.add_done_callback(self._checkpoint_done)
        self._checkpointing = task

    def _checkpoint_done(self, task: asyncio.Task[None]) -> None:
        self._checkpointing = None
        if not task.cancelled() and task.exception() is not None:
            log.warning("SQLite checkpoint failed; retried after the next writes", error=repr(task.exception()))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only unit of work."""
        async with self._read_sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.read() as session:
            await session.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        if self._checkpointing is not None:
            await asyncio.gather(self._checkpointing, return_exceptions=True)
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()
