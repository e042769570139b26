"""Shared fixtures: real databases (a SQLite file and a throwaway PostgreSQL database), the app."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from service.db.migrate import upgrade
from service.db.models import metadata
from service.logging import configure_logging
from service.settings import Settings

# An admin connection to PostgreSQL; each test session creates and drops its own database there.
POSTGRES_ADMIN_DSN = os.environ.get("SWITCHBOARD_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
# CI sets this so that an unreachable PostgreSQL fails the run instead of skipping its half.
REQUIRE_POSTGRES = os.environ.get("SWITCHBOARD_TEST_REQUIRE_POSTGRES") == "1"
configure_logging("info")

# pytest-timeout: pyproject.toml sets 120 s per test; process-level tests (kill -9, replicas) take longer.
SLOW_TIMEOUT_SECONDS = 600

ADMIN_KEY = "test-admin-key"
WEBHOOK_SECRET = "test-webhook-secret"
VAPI_KEY = "test-vapi-private-key"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--screenshots",
        action="store_true",
        help="regenerate docs/screenshots/ from the console's browser tests (otherwise they go to a temporary folder)",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") and not item.get_closest_marker("timeout"):
            item.add_marker(pytest.mark.timeout(SLOW_TIMEOUT_SECONDS))


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'switchboard.db'}"
    upgrade(url)
    return url


def run_blocking(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run set-up coroutines in their own loop and thread, whatever loop the caller is in."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coroutine).result()


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_DSN, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


@pytest.fixture(scope="session")
def postgresql_url() -> Iterator[str]:
    name = f"switchboard_test_{uuid.uuid4().hex[:12]}"
    try:
        run_blocking(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required but unreachable at {POSTGRES_ADMIN_DSN}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_ADMIN_DSN}: {exc}")
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    url = f"{base}/{name}"
    upgrade(url)
    yield url
    run_blocking(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def new_postgresql_url() -> Iterator[str]:
    """A PostgreSQL database created for one test and never migrated."""
    name = f"switchboard_new_{uuid.uuid4().hex[:12]}"
    try:
        run_blocking(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as exc:
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required but unreachable at {POSTGRES_ADMIN_DSN}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {POSTGRES_ADMIN_DSN}: {exc}")
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    yield f"{base}/{name}"
    run_blocking(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _empty_tables(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        for table in reversed(metadata.sorted_tables):
            await connection.execute(table.delete())
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Each database-backed test runs on both backends, starting from empty tables."""
    url: str = request.getfixturevalue(f"{request.param}_url")
    run_blocking(_empty_tables(url))
    return url


def make_settings(database_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "storage_url": "memory://",
        "admin_api_key": ADMIN_KEY,
        "webhook_secret": WEBHOOK_SECRET,
        "vapi_api_key": VAPI_KEY,
        "listen_connect_timeout_seconds": 5.0,
        "shutdown_timeout_seconds": 5.0,
        # The catch-up imports any call the simulator knows at start-up: on only in the tests about it.
        "vapi_catch_up_seconds": 0,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def webhook_headers() -> dict[str, str]:
    return {"X-Vapi-Secret": WEBHOOK_SECRET}


@contextmanager
def statements_sent(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL ``engine`` sends to the database inside the block, in order."""
    statements: list[str] = []

    def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


# Every test fails if its captured logs contain an API key (see tests/security/logscan.py).
pytest_plugins = ["tests.security.logscan"]
