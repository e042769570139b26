"""The query every replica runs every few seconds to find calls that need a session stays indexed."""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from service.db.models import utcnow
from service.listen.leases import unowned_calls_query


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
