"""The key of a ``once: false`` transcript firing: the n-th identical utterance from one source,
counted through an index (not by reading the call's whole transcript)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from service.calls.events import NewEvent, append_events, transcript_key
from service.db.engine import Database
from service.db.models import Call
from service.rules import firings
from service.rules.milestones import occurrences_from_events


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    async with database.write() as session:
        session.add(Call(id="call-1", status="in-progress"))
    yield database
    await database.dispose()


def said(source: str, text_: str, role: str = "user") -> NewEvent:
    return NewEvent(source, "transcript", {"role": role, "transcriptType": "final", "transcript": text_})


async def test_the_nth_identical_utterance_of_a_source_gets_ordinal_n(db: Database) -> None:
    spoken = [
        said("vapi", "Yes."),
        said("listen", "yes."),
        said("vapi", "No."),
        said("vapi", "yes"),  # another "yes" from the webhooks: the second
        said("vapi", "Yes.", role="assistant"),  # same words, other role: another utterance
        said("listen", "Yes"),  # the listen copy of the second "yes"
    ]
    async with db.write() as session:
        stored = await append_events(session, "call-1", spoken)
    keys = []
    async with db.read() as session:
        for occurrence in occurrences_from_events("call-1", stored):
            keys.append(await firings.occurrence_key(session, occurrence))
    yes, no, assistant = (
        transcript_key("user", "yes."),
        transcript_key("user", "no."),
        transcript_key("assistant", "yes."),
    )
    assert transcript_key("user", "yes") != yes, "punctuation is part of the words"
    plain_yes = transcript_key("user", "yes")
    assert keys == [f"{yes}:1", f"{yes}:1", f"{no}:1", f"{plain_yes}:1", f"{assistant}:1", f"{plain_yes}:1"]
    async with db.write() as session:
        again = await append_events(session, "call-1", [said("vapi", "YES."), said("listen", "Yes.")])
    async with db.read() as session:
        later = [await firings.occurrence_key(session, o) for o in occurrences_from_events("call-1", again)]
    assert later == [f"{yes}:2", f"{yes}:2"], "the second 'Yes.' of each source: one firing for both copies"


async def test_the_count_reads_the_utterance_index(sqlite_url: str) -> None:
    database = Database(sqlite_url)
    try:
        async with database.read() as session:
            plan = (
                await session.execute(
                    text(
                        "EXPLAIN QUERY PLAN SELECT count(*) FROM call_event WHERE call_id = 'c' "
                        "AND utterance = 'transcript:user:0' AND source = 'vapi' AND seq < 10"
                    )
                )
            ).all()
    finally:
        await database.dispose()
    assert any("ix_call_event_utterance" in str(row[-1]) for row in plan), plan
