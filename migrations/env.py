"""Alembic environment: async engine, URL from Switchboard's settings (never from alembic.ini).

Any number of processes may migrate at once (every replica runs ``switchboard migrate`` on start):
the upgrade runs under a lock, so the first one migrates and the others then find nothing to do.
PostgreSQL: a session-level advisory lock (held across the migrations' own transactions).
SQLite: an exclusive ``flock`` on a file beside the database (only processes on one host share a file).
"""

from __future__ import annotations

import asyncio
import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from service.db.models import described_by_models, metadata

config = context.config
# pg_advisory_lock's key: any constant that no other lock of the database uses ("switchboard migrate").
MIGRATION_LOCK_KEY = 0x5B_4D16_0001


def _database_url() -> str:
    url = config.attributes.get("database_url")
    if url:
        return str(url)
    from service.settings import load_settings

    return load_settings().database_url


@contextmanager
def _postgresql_lock(connection: Connection) -> Iterator[None]:
    # Committed at once: the lock belongs to the session, not to the transaction that took it.
    connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
    connection.commit()
    try:
        yield
    finally:
        if connection.in_transaction():  # a failed migration leaves its transaction open
            connection.rollback()
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()


@contextmanager
def _sqlite_lock(connection: Connection) -> Iterator[None]:
    database = make_url(str(connection.engine.url)).database
    if database in (None, "", ":memory:"):  # nobody else can see an in-memory database
        yield
        return
    with Path(f"{database}.migrate-lock").open("a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        yield


def _run(connection: Connection) -> None:
    lock = _postgresql_lock if connection.dialect.name == "postgresql" else _sqlite_lock
    with lock(connection):
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            include_name=described_by_models,
        )
        with context.begin_transaction():
            context.run_migrations()


async def _run_online() -> None:
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_database_url(), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_online())
