"""Appending to call timelines: per-call sequences without gaps, one statement for many calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from service.calls.events import NewEvent, append_events, insert_events, number_events_of_calls
from service.db.engine import Database
from service.db.models import Call, CallEvent


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    async with database.write() as session:
        session.add_all([Call(id=f"call-{n}", status="in-progress") for n in range(3)])
    yield database
    await database.dispose()


def events(label: str, count: int) -> list[NewEvent]:
    return [NewEvent("listen", "transcript", {"transcript": f"{label}{n}"}) for n in range(count)]


async def test_events_of_many_calls_get_each_call_s_next_numbers(db: Database) -> None:
    async with db.write() as session:
        await append_events(session, "call-0", events("a", 2))
        await append_events(session, "call-1", events("b", 1))
    async with db.write() as session:
        batch = {"call-0": events("c", 3), "call-1": events("d", 2), "call-2": [], "gone": events("e", 1)}
        numbered = await number_events_of_calls(session, batch)
        await insert_events(session, [row for rows in numbered.values() for row in rows])
    assert {call_id: [row.seq for row in rows] for call_id, rows in numbered.items()} == {
        "call-0": [3, 4, 5],
        "call-1": [2, 3],
    }, "calls without events or without a row are left out"
    async with db.read() as session:
        stored = (await session.execute(select(CallEvent.call_id, CallEvent.seq, CallEvent.payload))).all()
        last = dict((await session.execute(select(Call.id, Call.last_event_seq))).tuples().all())
    assert sorted((call_id, seq) for call_id, seq, _ in stored) == [
        *(("call-0", seq) for seq in range(1, 6)),
        *(("call-1", seq) for seq in range(1, 4)),
    ]
    assert last == {"call-0": 5, "call-1": 3, "call-2": 0}
    assert {payload["transcript"] for call_id, seq, payload in stored if call_id == "call-0" and seq > 2} == {
        "c0",
        "c1",
        "c2",
    }


async def test_concurrent_multi_call_appends_never_share_a_number(db: Database) -> None:
    async def append(label: str) -> None:
        async with db.write() as session:
            numbered = await number_events_of_calls(
                session, {"call-2": events(label, 2), "call-0": events(label, 1), "call-1": events(label, 3)}
            )
            await insert_events(session, [row for rows in numbered.values() for row in rows])

    await asyncio.gather(*(append(f"w{n}-") for n in range(8)))
    async with db.read() as session:
        stored = (await session.execute(select(CallEvent.call_id, CallEvent.seq))).tuples().all()
    for call_id, per_writer in (("call-0", 1), ("call-1", 3), ("call-2", 2)):
        seqs = sorted(seq for owner, seq in stored if owner == call_id)
        assert seqs == list(range(1, 8 * per_writer + 1)), call_id
