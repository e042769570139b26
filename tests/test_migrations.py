"""The Alembic migrations produce exactly the schema the models describe, on both backends."""

import datetime as dt
import importlib.util
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, MetaData, Table, insert, inspect, select
from sqlalchemy.ext.asyncio import create_async_engine

from service.calls.events import transcript_key, utterance_key
from service.calls.metadata import index_rows
from service.calls.service import CallFilters
from service.db.engine import Database
from service.db.migrate import alembic_config, migrations_path
from service.db.models import (
    Call,
    CallEvent,
    CallMetadata,
    WebhookDelivery,
    WebhookEndpoint,
    described_by_models,
    metadata,
)


def _other_dialects_indexes(dialect: str) -> set[str | None]:
    """Indexes declared for another dialect only (``ddl_if``): not expected on this one."""
    return {
        index.name
        for table in metadata.tables.values()
        for index in table.indexes
        if index._ddl_if is not None and index._ddl_if.dialect not in (None, dialect)
    }


def _compare(sync: Connection) -> list[Any]:
    context = MigrationContext.configure(sync, opts={"compare_type": False, "include_name": described_by_models})
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


def _migrate(url: str, direction: str, revision: str) -> None:
    # Alembic's env runs its own event loop: in a thread, away from the test's.
    step = command.upgrade if direction == "up" else command.downgrade
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(step, alembic_config(url), revision).result()


def _table_before_0009(model: type[Any], added: set[str]) -> Table:
    """A model's table without the columns 0009 adds: inserts into older revisions (the model's
    Python-side defaults would name those columns)."""
    full = cast(Table, model.__table__)
    return Table(full.name, MetaData(), *(c._copy() for c in full.c if c.name not in added))


def _call_table_before_0009() -> Table:
    return _table_before_0009(Call, {"legal_hold", "legal_hold_reason", "erasing_until"})


def _indexes(sync: Connection, table: str) -> set[str | None]:
    return {index["name"] for index in inspect(sync).get_indexes(table)}


async def test_0005_backfills_call_metadata_and_downgrades(database_url: str) -> None:
    """0005 indexes the metadata of calls stored before it (in batches, more calls than one batch holds),
    and its downgrade drops ``call_metadata`` (PostgreSQL: restores the GIN index)."""
    now = dt.datetime.now(dt.UTC)
    calls: list[dict[str, Any]] = [
        {
            "id": f"call-{i:05d}",
            "status": "ended",
            "customer": {},
            "metadata": [{"crmId": f"crm-{i}", "tier": i % 5, "vip": i % 2 == 0}, {}, {"x": None, "y": [1]}][i % 3],
            "created_at": now - dt.timedelta(seconds=i),
            "updated_at": now,
        }
        for i in range(2100)
    ]
    engine = create_async_engine(database_url)
    call_table = _call_table_before_0009()
    try:
        _migrate(database_url, "down", "0004")
        async with engine.begin() as connection:
            await connection.execute(insert(call_table), calls)
        _migrate(database_url, "up", "0005")
        async with engine.connect() as connection:
            rows = (await connection.execute(select(CallMetadata.__table__))).mappings().all()
            created = dict((await connection.execute(select(Call.id, Call.created_at))).tuples().all())
            call_indexes = await connection.run_sync(_indexes, "call")
        expected = [row for call in calls for row in index_rows(call["id"], call["created_at"], call["metadata"])]
        assert len(rows) == len(expected) == 700 * 3
        assert {(r["call_id"], r["key"], r["value"], r["kind"]) for r in rows} == {
            (r["call_id"], r["key"], r["value"], r["kind"]) for r in expected
        }
        assert all(row["created_at"] == created[row["call_id"]] for row in rows)
        assert "ix_call_metadata" not in call_indexes
        _migrate(database_url, "up", "head")  # the service reads the model's columns, added up to head
        db = Database(database_url)
        try:  # the listing's own query (the service also loads tables of later revisions)
            async with db.read() as session:
                query = CallFilters(metadata={"tier": "1", "vip": "true"}).page(limit=3, cursor=None)
                page = list((await session.scalars(query)).all())
        finally:
            await db.dispose()
        assert [call.id for call in page] == ["call-00006", "call-00036", "call-00066"]

        _migrate(database_url, "down", "0004")
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
            call_indexes = await connection.run_sync(_indexes, "call")
        assert "call_metadata" not in tables
        assert ("ix_call_metadata" in call_indexes) == database_url.startswith("postgresql")
    finally:
        _migrate(database_url, "up", "head")
        await engine.dispose()


async def test_0008_keys_the_final_transcripts_of_live_calls(database_url: str) -> None:
    """0008 fills ``call_event.utterance`` for the final transcripts of live calls (their rules may still
    fire); ended calls and other events keep none."""
    now = dt.datetime.now(dt.UTC)
    engine = create_async_engine(database_url)
    call_table, event_table = _call_table_before_0009(), cast(Table, CallEvent.__table__)
    final = {"type": "transcript", "role": "user", "transcriptType": "final", "transcript": "  Yes  PLEASE "}
    partial = {**final, "transcriptType": "partial"}
    try:
        _migrate(database_url, "down", "0007")
        async with engine.begin() as connection:
            await connection.execute(
                insert(call_table),
                [
                    {"id": cid, "status": status, "customer": {}, "metadata": {}, "created_at": now, "updated_at": now}
                    for cid, status in (("live", "in-progress"), ("done", "ended"))
                ],
            )
            rows = [(cid, seq, kind, payload) for cid in ("live", "done") for seq, kind, payload in (
                (1, "transcript", final), (2, "transcript", partial), (3, "speech-update", {"status": "started"})
            )]  # fmt: skip
            await connection.execute(
                insert(event_table).values(
                    [
                        {
                            "call_id": c,
                            "seq": q,
                            "source": "vapi",
                            "type": k,
                            "payload": pl,
                            "occurred_at": now,
                            "received_at": now,
                        }
                        for c, q, k, pl in rows
                    ]
                )
            )
        _migrate(database_url, "up", "0008")
        async with engine.connect() as connection:
            keyed = (await connection.execute(select(CallEvent.call_id, CallEvent.seq, CallEvent.utterance))).all()
        assert {(c, q): u for c, q, u in keyed} == {
            ("live", 1): transcript_key("user", "yes please"),
            ("live", 2): None,
            ("live", 3): None,
            ("done", 1): None,
            ("done", 2): None,
            ("done", 3): None,
        }
    finally:
        _migrate(database_url, "up", "head")
        await engine.dispose()


def _revision_module(name: str) -> Any:
    """A revision file as a module (migrations freeze the helpers they use)."""
    path = next((migrations_path() / "versions").glob(f"*_{name}.py"))
    spec = importlib.util.spec_from_file_location(f"revision_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_frozen_migration_helpers_still_agree_with_the_service() -> None:
    """0005 and 0008 keep their own copies of the metadata index and utterance key encodings; rows they
    wrote must still be found by the service, so a change of encoding needs a migration of its own."""
    metadata_0005, utterance_0008 = _revision_module("0005"), _revision_module("0008")
    created = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
    samples: list[dict[str, Any]] = [
        {"crmId": "c-1", "tier": 3, "score": 3.0, "big": 1e300, "vip": True, "none": None, "list": [1]},
        {"long": "x" * 500, "bad key!": "skipped", "float": 0.1, "n": -7},
    ]
    for sample in samples:
        assert metadata_0005.index_rows("call-1", created, sample) == index_rows("call-1", created, sample)
    for payload in (
        {"transcriptType": "final", "role": "user", "transcript": "  I want to   CANCEL "},
        {"transcriptType": "partial", "role": "user", "transcript": "cancel"},
        {"transcriptType": "final", "role": "assistant"},
    ):
        assert utterance_0008.utterance_key("transcript", payload) == utterance_key("transcript", payload)
    assert utterance_0008.utterance_key("status-update", {}) is None


async def test_0009_fills_the_call_of_stored_deliveries(database_url: str) -> None:
    """0009 adds ``webhook_delivery.call_id`` and fills it from the payloads already stored: ``data.id`` of
    call events, ``data.callId`` of the others (what erasure then finds by index)."""
    now = dt.datetime.now(dt.UTC)
    engine = create_async_engine(database_url)
    endpoint = {"id": uuid.uuid4(), "url": "https://x.example/h", "events": [], "secret": "s", "enabled": True}
    payloads = {
        "call.ended": {"type": "call.ended", "data": {"id": "call-1", "status": "ended"}},
        "recording.completed": {"type": "recording.completed", "data": {"callId": "call-2", "bytes": 3}},
        "rule.fired": {"type": "rule.fired", "data": {"rule": "r"}},
    }
    try:
        _migrate(database_url, "down", "0008")
        async with engine.begin() as connection:
            stamped = {**endpoint, "created_at": now, "updated_at": now}
            await connection.execute(insert(_table_before_0009(WebhookEndpoint, set())), [stamped])
            await connection.execute(
                insert(_table_before_0009(WebhookDelivery, {"call_id"})),
                [
                    {
                        "id": uuid.uuid4(),
                        "endpoint_id": endpoint["id"],
                        "message_id": f"m-{kind}",
                        "event_type": kind,
                        "payload": payload,
                        "status": "delivered",
                        "attempts": 1,
                        "next_attempt_at": now,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for kind, payload in payloads.items()
                ],
            )
        _migrate(database_url, "up", "0009")
        async with engine.connect() as connection:
            query = select(WebhookDelivery.event_type, WebhookDelivery.call_id)
            rows = (await connection.execute(query)).tuples().all()
        assert dict(rows) == {"call.ended": "call-1", "recording.completed": "call-2", "rule.fired": None}
    finally:
        _migrate(database_url, "up", "head")
        await engine.dispose()
