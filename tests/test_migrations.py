"""The Alembic migrations produce exactly the schema the models describe, on both backends."""

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from service.db.models import metadata


def _other_dialects_indexes(dialect: str) -> set[str | None]:
    """Indexes declared for another dialect only (``ddl_if``): not expected on this one."""
    return {
        index.name
        for table in metadata.tables.values()
        for index in table.indexes
        if index._ddl_if is not None and index._ddl_if.dialect not in (None, dialect)
    }


def _compare(sync: Connection) -> list[Any]:
    context = MigrationContext.configure(sync, opts={"compare_type": False})
    skip = _other_dialects_indexes(sync.dialect.name)
    return [
        diff
        for diff in compare_metadata(context, metadata)
        if not (isinstance(diff, tuple) and diff[0] == "add_index" and diff[1].name in skip)
    ]


async def test_migrated_schema_matches_the_models(database_url: str) -> None:
    engine = create_async_engine(database_url)
    async with engine.connect() as connection:
        diff = await connection.run_sync(_compare)
    await engine.dispose()
    assert diff == [], f"models and migrations disagree; add a migration: {diff}"
