"""Start-up checks: a configuration that cannot work stops ``serve`` (and ``migrate``, ``simulate``) at
once with one line that says what to fix, instead of a traceback or a failure after start-up.

Each check raises :class:`StartupCheckFailed` (a :class:`ConfigurationError`: the CLI prints it and
exits 2). Every wait is bounded: the checks answer within :data:`DATABASE_TIMEOUT_SECONDS` or so.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from alembic.script import ScriptDirectory
from sqlalchemy import inspect, pool, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.ext.asyncio import create_async_engine

from service.db.engine import sqlite_file
from service.db.migrate import alembic_config
from service.settings import ConfigurationError

DATABASE_TIMEOUT_SECONDS = 10.0
_DATABASE = "SWITCHBOARD_DATABASE_URL"


class StartupCheckFailed(ConfigurationError):
    """A dependency (database, storage, port) that cannot be used as configured."""


def _where(url: str) -> str:
    """The database a URL names, for messages: never its password."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return f"SQLite file {parsed.database}"
    return f"database {parsed.database!r} on {parsed.host or 'localhost'}:{parsed.port or 5432}"


def _explain_connect_error(url: str, exc: BaseException) -> str:
    """One line for a failure to connect: what happened, and the variable to fix."""
    name = type(exc).__name__
    where = _where(url)
    if name == "InvalidCatalogNameError":
        return f"{where} does not exist: create it (createdb) or fix {_DATABASE}"
    if name in ("InvalidPasswordError", "InvalidAuthorizationSpecificationError"):
        return f"{where} refused the credentials ({exc}): fix the user or password in {_DATABASE}"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host of the {where}: fix {_DATABASE}"
    if isinstance(exc, TimeoutError):
        return f"the {where} did not answer within {DATABASE_TIMEOUT_SECONDS:g} s: check {_DATABASE} and the network"
    if isinstance(exc, OSError):
        reason = exc.strerror or name
        return f"cannot reach the {where} ({reason}): is the server running? Check {_DATABASE}"
    return f"cannot use the {where} ({name}: {exc}): check {_DATABASE}"


def head_revision(url: str) -> str | None:
    """The newest migration this installation ships."""
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def _current_revision(sync: Connection) -> str | None:
    if not inspect(sync).has_table("alembic_version"):
        return None
    return sync.execute(text("SELECT version_num FROM alembic_version")).scalar()


async def _revision_of(url: str) -> str | None:
    connect_args = {"timeout": DATABASE_TIMEOUT_SECONDS} if url.startswith("postgresql") else {}
    engine = create_async_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
    try:
        async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS), engine.connect() as connection:
            return await connection.run_sync(_current_revision)
    finally:
        await engine.dispose()


def check_database_reachable(url: str) -> str | None:
    """Connect to the database (or make sure a SQLite file can be created); returns its revision.

    Blocking; run before migrating, so that an unusable database is reported as such, not as a
    migration failure.
    """
    if (database := sqlite_file(url)) is not None:
        folder = Path(database).expanduser().resolve().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupCheckFailed(
                f"cannot create the folder of the SQLite file {database} ({exc.strerror}): fix {_DATABASE}"
            ) from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise StartupCheckFailed(
                f"the folder of the SQLite file {database} is not writable by this user (uid {os.getuid()}): "
                f"fix {_DATABASE} or the folder's owner"
            )
    try:
        return asyncio.run(_revision_of(url))
    except Exception as exc:
        raise StartupCheckFailed(_explain_connect_error(url, exc)) from None


def check_database_migrated(url: str, revision: str | None) -> None:
    """Refuse a database that is not at this installation's newest migration."""
    head = head_revision(url)
    if revision == head:
        return
    if revision is None:
        raise StartupCheckFailed(
            f"the {_where(url)} is not migrated: run `switchboard migrate` (or set SWITCHBOARD_AUTO_MIGRATE=true)"
        )
    try:
        ScriptDirectory.from_config(alembic_config(url)).get_revision(revision)
    except Exception:
        raise StartupCheckFailed(
            f"the {_where(url)} is at migration {revision}, which this version of Switchboard does not know "
            f"(a newer version migrated it): upgrade Switchboard or fix {_DATABASE}"
        ) from None
    raise StartupCheckFailed(
        f"the {_where(url)} is at migration {revision}, not {head}: run `switchboard migrate` "
        "(or set SWITCHBOARD_AUTO_MIGRATE=true)"
    )


def check_storage_writable(storage_url: str) -> None:
    """A ``file://`` storage folder must be creatable and writable (object stores are checked on use)."""
    parts = urlsplit(storage_url)
    if parts.scheme != "file":
        return
    folder = Path(parts.netloc + parts.path).expanduser()
    probe = folder / f".switchboard-write-check-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StartupCheckFailed(
            f"the recordings folder {folder} is not writable ({exc.strerror}; this process runs as uid {os.getuid()}): "
            "fix SWITCHBOARD_STORAGE_URL or the folder's owner"
        ) from None


def bind_port(host: str, port: int, *, option: str = "--port") -> socket.socket:
    """A listening socket on ``host:port``, bound before anything starts, or a one-line refusal."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio enables TCP_NODELAY only on sockets whose proto says TCP.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            message = f"port {port} on {host} is in use by another process: stop it or choose another {option}"
        elif exc.errno in (errno.EACCES, errno.EPERM):
            message = f"not allowed to listen on port {port} (below 1024 needs privileges): choose another {option}"
        else:
            message = f"cannot listen on {host}:{port} ({exc.strerror}): fix --host or {option}"
        raise StartupCheckFailed(message) from None
    return sock


def check_workers(database_url: str, redis_url: str | None, workers: int) -> None:
    """``serve --workers N`` (N > 1) runs N replicas on one host: PostgreSQL and Redis, as for replicas.

    SQLite is refused: its single writer would serialise the workers (each write waits for the file's
    lock) and it is not what the replicas' guarantees are tested on. Redis is required: without it a
    listener reaching a worker that does not record the call would be closed with 4404, and the console
    feed would show only that worker's changes.
    """
    if workers <= 1:
        return
    if make_url(database_url).get_backend_name() == "sqlite":
        raise StartupCheckFailed(
            f"--workers {workers} needs PostgreSQL (SWITCHBOARD_DATABASE_URL=postgresql+asyncpg://…); "
            "SQLite serves one process: run without --workers"
        )
    if not redis_url:
        raise StartupCheckFailed(
            f"--workers {workers} needs SWITCHBOARD_REDIS_URL (redis://HOST:PORT/DB), through which the workers "
            "share live audio and the console's feed"
        )


def check_redis_reachable(url: str) -> None:
    """Ping the Redis of ``SWITCHBOARD_REDIS_URL`` once, within :data:`DATABASE_TIMEOUT_SECONDS`."""
    import redis

    parts = urlsplit(url)
    where = f"Redis at {parts.hostname or parts.path or 'localhost'}:{parts.port or 6379}"
    if parts.scheme == "unix":
        where = f"Redis at {parts.path}"
    client = redis.Redis.from_url(
        url, socket_connect_timeout=DATABASE_TIMEOUT_SECONDS, socket_timeout=DATABASE_TIMEOUT_SECONDS
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        raise StartupCheckFailed(f"cannot reach the {where} ({exc}): check SWITCHBOARD_REDIS_URL") from None
    finally:
        client.close()
