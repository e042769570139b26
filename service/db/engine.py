"""The database handle: engines and short units of work.

SQLite (the embedded default) runs in WAL mode with a busy timeout. Write transactions start with
``BEGIN IMMEDIATE`` so that two writers queue on the busy timeout instead of failing when one upgrades
a read snapshot to a write; reads keep SQLite's deferred transactions and never block writers.
On PostgreSQL both handles share one engine.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 10_000
_in_write: contextvars.ContextVar[bool] = contextvars.ContextVar("in_sqlite_write", default=False)


def _sqlite_engine(url: str, *, immediate: bool) -> AsyncEngine:
    engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def ensure_sqlite_directory(url: str) -> None:
    """Create the folder of a SQLite file so that the embedded default works on a fresh machine."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


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
            self.write_engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)
            self.read_engine = self.write_engine
        self._write_sessions = async_sessionmaker(self.write_engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self._read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One write transaction: committed when the block exits normally, rolled back otherwise.

        On SQLite only one writer can proceed anyway; queueing writers on an asyncio lock instead of
        in SQLite's busy handler (which sleeps and polls) keeps the latency tail short.
        """
        if self._write_lock is None:
            async with self._write_sessions() as session, session.begin():
                yield session
            return
        if _in_write.get():
            raise RuntimeError("nested write transaction: it would wait for itself on SQLite")
        token = _in_write.set(True)
        try:
            async with self._write_lock, self._write_sessions() as session, session.begin():
                yield session
        finally:
            _in_write.reset(token)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        """A read-only unit of work."""
        async with self._read_sessions() as session, session.begin():
            yield session

    async def ping(self) -> None:
        async with self.read() as session:
            await session.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        await self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            await self.read_engine.dispose()
