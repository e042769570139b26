"""Calls read and written with Core statements (CallRows): only what changed is written, the metadata
index follows, first sightings are created once, and other columns written concurrently survive."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from service.calls.rows import CallRows
from service.db.engine import Database
from service.db.models import Call, CallMetadata, ErasedCall
from service.errors import ConflictError
from tests.conftest import statements_sent


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    async with database.write() as session:
        rows = CallRows(session)
        known = await rows.lock_one("known", origin="webhook")
        known.status, known.customer, known.call_metadata = "ringing", {"name": "Ada"}, {"crmId": "c-1"}
        await rows.save()
    yield database
    await database.dispose()


async def stored(db: Database, call_id: str) -> Call:
    async with db.read() as session:
        call = await session.scalar(select(Call).where(Call.id == call_id))
    assert call is not None
    return call


async def metadata_index(db: Database, call_id: str) -> dict[str, str]:
    async with db.read() as session:
        query = select(CallMetadata.key, CallMetadata.value).where(CallMetadata.call_id == call_id)
        return dict((await session.execute(query)).tuples().all())


async def test_only_the_changed_columns_are_written(db: Database) -> None:
    before = await stored(db, "known")
    with statements_sent(db.write_engine) as statements:
        async with db.write() as session:
            rows = CallRows(session)
            call = (await rows.lock(["known"], origin="webhook"))["known"]
            assert (call.status, call.customer, rows.created) == ("ringing", {"name": "Ada"}, set())
            call.status = "in-progress"
            call.customer["number"] = "+14155550123"  # changed in place: still a change
            await rows.save()
    updates = [s for s in statements if s.lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 1
    assignments = updates[0].split(" SET ", 1)[1].split(" WHERE ", 1)[0].split(",")
    written = {assignment.split("=")[0].strip().strip('"') for assignment in assignments}
    assert written == {"status", "customer", "updated_at"}, "unchanged columns are not written"
    after = await stored(db, "known")
    assert (after.status, after.customer) == ("in-progress", {"name": "Ada", "number": "+14155550123"})
    assert after.updated_at > before.updated_at
    assert await metadata_index(db, "known") == {"crmId": "c-1"}, "metadata unchanged: its index rows stay"


async def test_an_unchanged_call_is_not_written(db: Database) -> None:
    before = await stored(db, "known")
    async with db.write() as session:
        rows = CallRows(session)
        call = (await rows.lock(["known"], origin="webhook"))["known"]
        call.status = "ringing"  # the value it had
        await rows.save()
    assert (await stored(db, "known")).updated_at == before.updated_at


async def test_a_call_first_seen_is_created_with_its_metadata_indexed(db: Database) -> None:
    async with db.write() as session:
        rows = CallRows(session)
        calls = await rows.lock(["new-b", "known", "new-a"], origin="webhook")
        assert list(calls) == ["new-b", "known", "new-a"], "in the order asked"
        assert rows.created == {"new-a", "new-b"}
        assert (calls["new-a"].status, calls["new-a"].origin, calls["new-a"].last_event_seq) == ("queued", "webhook", 0)
        calls["new-a"].call_metadata = {"crmId": "c-2", "tier": 3}
        await rows.save()
    assert await metadata_index(db, "new-a") == {"crmId": "c-2", "tier": "3"}
    assert (await stored(db, "new-b")).status == "queued"


async def test_changed_metadata_replaces_its_index_rows(db: Database) -> None:
    async with db.write() as session:
        rows = CallRows(session)
        call = (await rows.lock(["known"], origin="api"))["known"]
        call.call_metadata = {"crmId": "c-9"}
        await rows.save()
    assert await metadata_index(db, "known") == {"crmId": "c-9"}


async def test_concurrent_first_sightings_converge_on_one_row(db: Database) -> None:
    async def sight() -> bool:
        async with db.write() as session:
            rows = CallRows(session)
            call = (await rows.lock(["raced"], origin="webhook"))["raced"]
            call.last_event_seq += 1
            await rows.save()
            return "raced" in rows.created

    created = await asyncio.gather(*(sight() for _ in range(4)))
    assert created.count(True) == 1, "exactly one transaction created the row"
    assert (await stored(db, "raced")).last_event_seq == 4, "each saw the others' committed change"


async def test_a_created_call_s_metadata_saved_twice_keeps_one_set_of_index_rows(db: Database) -> None:
    async with db.write() as session:
        rows = CallRows(session)
        call = (await rows.lock(["twice"], origin="api"))["twice"]
        call.call_metadata = {"crmId": "c-1"}
        await rows.save()
        call.call_metadata = {"crmId": "c-2", "tier": "gold"}
        await rows.save()
    assert await metadata_index(db, "twice") == {"crmId": "c-2", "tier": "gold"}


async def test_a_batch_with_new_and_known_calls_locks_and_creates_them_all(db: Database) -> None:
    """On PostgreSQL several calls are looked up unlocked, the missing ones inserted, then all locked
    in id order; either way every call comes back, the new ones empty."""
    async with db.write() as session:
        rows = CallRows(session)
        calls = await rows.lock(["z-new", "known", "a-new", "known"], origin="webhook")
        assert sorted(calls) == ["a-new", "known", "z-new"]
        assert rows.created == {"a-new", "z-new"}
        assert calls["known"].customer == {"name": "Ada"}


async def test_an_erased_call_is_never_created_again(db: Database) -> None:
    async with db.write() as session:
        session.add(ErasedCall(id="gone", reason="request"))
    async with db.write() as session:
        rows = CallRows(session)
        calls = await rows.lock(["gone", "known", "new"], origin="webhook")
        assert set(calls) == {"known", "new"}
        assert (rows.created, rows.erased) == ({"new"}, {"gone"})
        with pytest.raises(ConflictError, match="was erased"):
            await rows.lock_one("gone", origin="import")
        await rows.save()
    async with db.read() as session:
        assert set((await session.scalars(select(Call.id))).all()) == {"known", "new"}
