"""Migration 0010 indexes the transcripts stored before it, once each, queues the finalised recordings
for analytics, and downgrades cleanly; 0014 gives each call the ceiling of its utterances' ids."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

from alembic import command
from sqlalchemy import Table, insert, inspect, select
from sqlalchemy.ext.asyncio import create_async_engine

from service.calls.changes import CallChanges
from service.calls.events import NewEvent, transcript_key
from service.db.engine import Database
from service.db.migrate import alembic_config
from service.db.models import Call, CallAnalytics, CallEvent, Recording, TranscriptUtterance
from service.listen.journal import EventJournal
from service.search.index import TranscriptIndexer
from service.search.service import SearchFilters, SearchService


def _migrate(url: str, direction: str, revision: str) -> None:
    step = command.upgrade if direction == "up" else command.downgrade
    with ThreadPoolExecutor(max_workers=1) as pool:  # Alembic's env runs its own event loop
        pool.submit(step, alembic_config(url), revision).result()


def _said(role: str, text: str, *, kind: str = "transcript", final: bool = True) -> tuple[str, dict[str, Any]]:
    return kind, {"type": kind, "role": role, "transcriptType": "final" if final else "partial", "transcript": text}


QUALIFIED = 'transcript[transcriptType="final"]'


async def test_0010_indexes_stored_transcripts_once_each(database_url: str) -> None:
    now = dt.datetime.now(dt.UTC)
    engine = create_async_engine(database_url)
    call_table, event_table = cast(Table, Call.__table__), cast(Table, CallEvent.__table__)
    timeline: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
        "ended": [
            ("vapi", *_said("user", "I want a refund")),
            ("listen", *_said("user", "i want a  refund")),  # its listen copy
            ("vapi", *_said("user", "I want a ref", final=False)),
            ("vapi", "speech-update", {"status": "started", "role": "assistant"}),
            ("listen", *_said("assistant", "Your refund is on its way")),
            ("vapi", *_said("assistant", "Your refund is on its way", kind=QUALIFIED)),
        ],
        # More events than one batch of the backfill: the ordinals carry across batches.
        "long": [("vapi" if i % 2 else "listen", *_said("user", "yes")) for i in range(2100)],
    }
    try:
        _migrate(database_url, "down", "0009")
        async with engine.begin() as connection:
            await connection.execute(
                insert(call_table),
                [
                    {
                        "id": call_id,
                        "status": "ended",
                        "customer": {},
                        "metadata": {},
                        "created_at": now,
                        "updated_at": now,
                        "last_event_seq": len(events),
                    }
                    for call_id, events in timeline.items()
                ],
            )
            await connection.execute(
                insert(event_table),
                [
                    {
                        "call_id": call_id,
                        "seq": seq,
                        "source": source,
                        "type": kind,
                        "payload": payload,
                        "occurred_at": now + dt.timedelta(seconds=seq),
                        "received_at": now,
                    }
                    for call_id, events in timeline.items()
                    for seq, (source, kind, payload) in enumerate(events, start=1)
                ],
            )
            await connection.execute(
                insert(cast(Table, Recording.__table__)),
                [
                    {
                        "id": uuid.uuid4(),
                        "call_id": call_id,
                        "status": status,
                        "encoding": "pcm_s16le",
                        "sample_rate": 16000,
                        "channels": 2,
                        "bytes": 0,
                        "gaps": [],
                        "created_at": now,
                        "updated_at": now,
                    }
                    for call_id, status in (("ended", "completed"), ("long", "failed"))
                ],
            )
        _migrate(database_url, "up", "0010")
        async with engine.connect() as connection:
            queued = (await connection.execute(select(CallAnalytics.call_id, CallAnalytics.status))).tuples().all()
        assert queued == [("ended", "pending")], "finalised recordings with audio are queued for analytics"

        async with engine.connect() as connection:
            rows = (await connection.execute(select(TranscriptUtterance.__table__))).mappings().all()
            keys = dict(
                (
                    await connection.execute(
                        select(CallEvent.seq, CallEvent.utterance).where(CallEvent.call_id == "ended")
                    )
                )
                .tuples()
                .all()
            )
        ended = sorted(
            (row["seq"], row["role"], row["text"], row["ordinal"]) for row in rows if row["call_id"] == "ended"
        )
        assert ended == [(1, "user", "I want a refund", 1), (5, "assistant", "Your refund is on its way", 1)]
        assert all(row["occurred_at"] == now + dt.timedelta(seconds=row["seq"]) for row in rows)
        long = sorted((row["seq"], row["ordinal"]) for row in rows if row["call_id"] == "long")
        assert long == [(2 * n - 1, n) for n in range(1, 1051)], "the n-th yes of either source, once"
        assert keys[6] == transcript_key("assistant", "Your refund is on its way"), "the qualified type is keyed"
        assert (keys[3], keys[4]) == (None, None)

        _migrate(database_url, "up", "head")  # the service writes columns of later revisions
        async with engine.connect() as connection:
            ceilings = dict((await connection.execute(select(Call.id, Call.utterance_ceiling))).tuples().all())
        highest = {call_id: max(row["id"] for row in rows if row["call_id"] == call_id) for call_id in timeline}
        assert ceilings == highest, "0014: each call's newest utterance"

        db = Database(database_url)
        try:
            search = SearchService(db)
            hits, _ = await search.search("refund", SearchFilters(), limit=10, cursor=None)
            assert sorted(hit.text for hit in hits) == ["I want a refund", "Your refund is on its way"]
            # After the backfill the service continues the count: the 1,051st yes of the listen socket.
            changes = CallChanges()
            changes.subscribe(TranscriptIndexer())
            journal = EventJournal(db, changes)  # the listen socket's path, indexed as in the app
            journal.add("long", NewEvent("listen", *_said("user", "YES")))
            assert await journal.flush("long")
            await journal.close()
            async with db.read() as session:
                newest = await session.scalar(
                    select(TranscriptUtterance.ordinal).order_by(TranscriptUtterance.seq.desc()).limit(1)
                )
            assert newest == 1051
        finally:
            await db.dispose()

        _migrate(database_url, "down", "0009")
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
        assert not [table for table in tables if table.startswith("transcript_")]
    finally:
        _migrate(database_url, "up", "head")
        await engine.dispose()
