"""Transcript search benchmark: query latency over many calls' utterances, on SQLite and PostgreSQL.

    python bench/search.py --calls 100000 --utterances 20 \\
        --sqlite-path /var/tmp/search-2m.db --postgres-database switchboard_search_2m   # built once, then reused
    python bench/search.py --calls 5000 --queries 30                                    # a short throwaway run

Loads ``calls`` calls of ``utterances`` final utterances each straight into the tables the migrated schema
has (``call``, ``call_metadata``, ``transcript_utterance``): the full-text index is dropped for the load and
built once at the end (SQLite: the FTS5 insert trigger is dropped, ``'rebuild'`` fills the index, the
trigger is put back; PostgreSQL: ``COPY`` into the table, the GIN index re-created from its own
definition). A dataset named with ``--sqlite-path`` / ``--postgres-database`` is kept and reused when it
holds the requested size (migrations still run on it); without them it is thrown away.

The text is a Zipf vocabulary (exponent 1) of 20,000 words: a few call-centre words and stop words at the
head (``please`` is in about 60 % of utterances, ``account`` in about 8 %), made-up words in the tail
(down to a few utterances each), 4 to 16 words an utterance, and one of a dozen phrases in 15 % of them
(``"speak to a manager"`` common, ``"reset link expired"`` rare). Calls alternate user and assistant,
carry ``team`` (10 values) and a unique ``crm`` in their metadata, and five assistants.

Then times ``SearchService.search`` — the service's own statements, in process, without HTTP — for each
query shape, and ``GET /v1/calls?q=``'s statements (``CallFilters.resolved_page``). Per database and
shape: p50 and p99 in milliseconds, the rows on the page, and the query's total matches (counted once,
untimed).
``--plans`` prints each shape's statements with their plans (PostgreSQL: ``EXPLAIN (ANALYZE, BUFFERS)``).
A shape stops after ``--shape-seconds`` if it is slow, with fewer than ``--queries`` samples.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event, func, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.calls.metadata import index_rows
from service.calls.service import CallFilters
from service.db.engine import Database
from service.db.migrate import upgrade
from service.db.models import Call, CallMetadata, TranscriptUtterance
from service.db.statements import table_of
from service.fulltext.ceilings import settle_ceilings
from service.fulltext.query import parse_query
from service.fulltext.sql import CallsSaying
from service.search.service import SearchFilters, SearchService

VOCABULARY = 20_000
BATCH_CALLS = 2_000
SETTLE_BATCH = 5_000  # calls whose utterance ceiling is settled per statement once loaded
HEAD = [
    "please", "the", "to", "i", "you", "a", "and", "my", "it", "is", "account", "for", "that", "order", "can",
    "me", "payment", "of", "help", "this", "number", "card", "call", "refund", "today", "with", "your", "service",
    "time", "plan", "thanks", "billing", "address", "email", "delivery", "cancel", "subscription", "manager",
    "problem", "charge", "reference", "referral", "transfer", "password", "update", "invoice", "balance",
]  # fmt: skip
# (phrase, weight): one of them in 15 % of utterances.
PHRASES = [
    ("can i speak to a manager", 40), ("i want to cancel my subscription", 25), ("where is my order", 15),
    ("there is a problem with my card", 8), ("wrong billing address", 5), ("please hold the line", 4),
    ("my refund has not arrived", 2), ("update the delivery address", 1), ("reset link expired", 0.1),
]  # fmt: skip
PHRASE_SHARE = 0.15
NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
CALL_SPACING = dt.timedelta(seconds=60)


def vocabulary(rng: random.Random) -> list[str]:
    """The head words, then made-up words of two to four syllables, ranked by frequency."""
    syllables = [consonant + vowel for consonant in "bdfgklmnprstvz" for vowel in "aeiou"]
    words, seen = list(HEAD), set(HEAD)
    while len(words) < VOCABULARY:
        word = "".join(rng.choices(syllables, k=rng.randint(2, 4)))
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


class Corpus:
    """The dataset, generated deterministically from a seed: calls, their metadata and utterances."""

    def __init__(self, calls: int, per_call: int, seed: int = 17) -> None:
        self.calls, self.per_call = calls, per_call
        self.rng = random.Random(seed)
        self.words = vocabulary(self.rng)
        self.cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(self.words))))
        self.phrases = [phrase for phrase, _ in PHRASES]
        self.phrase_cumulative = list(itertools.accumulate(weight for _, weight in PHRASES))

    def created(self, number: int) -> dt.datetime:
        return NOW - CALL_SPACING * (self.calls - number)

    def sentence(self) -> str:
        said = self.rng.choices(self.words, cum_weights=self.cumulative, k=self.rng.randint(4, 16))
        if self.rng.random() < PHRASE_SHARE:
            phrase = self.rng.choices(self.phrases, cum_weights=self.phrase_cumulative)[0]
            said.insert(self.rng.randint(0, len(said)), phrase)
        return " ".join(said)

    def batches(self) -> Iterator[tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]]:
        """(calls, call_metadata rows, utterances), ``BATCH_CALLS`` calls at a time, oldest first."""
        for start in range(0, self.calls, BATCH_CALLS):
            calls, metadata, said = [], [], []
            for number in range(start, min(start + BATCH_CALLS, self.calls)):
                created, call_id = self.created(number), call_name(number)
                tags = {"team": f"team-{number % 10}", "crm": f"crm-{number}"}
                calls.append(
                    {
                        "id": call_id,
                        "status": "ended",
                        "origin": "webhook",
                        "customer": {},
                        "metadata": tags,
                        "assistant_id": f"asst-{number % 5}",
                        "listen_auth": False,
                        "control_auth": False,
                        "last_event_seq": self.per_call,
                        "created_at": created,
                        "updated_at": created,
                    }
                )
                metadata += index_rows(call_id, created, tags)
                for seq in range(1, self.per_call + 1):
                    said.append(
                        {
                            "call_id": call_id,
                            "seq": seq,
                            "utterance": uuid.UUID(int=self.rng.getrandbits(128)).hex,
                            "ordinal": 1,
                            "role": "user" if seq % 2 else "assistant",
                            "text": self.sentence(),
                            "occurred_at": created + dt.timedelta(seconds=2 * seq),
                        }
                    )
            yield calls, metadata, said


def call_name(number: int) -> str:
    return f"call-{number:07d}"


def progress(done: int, total: int, started: float) -> None:
    elapsed = time.perf_counter() - started
    print(f"\r  loaded {done:,}/{total:,} calls ({elapsed:.0f} s)", end="", file=sys.stderr, flush=True)


async def load_sqlite(db: Database, corpus: Corpus) -> None:
    """Plain inserts without the FTS5 insert trigger, then one ``rebuild`` of the index."""
    async with db.write() as session:
        trigger = await session.scalar(
            text("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = 'transcript_fts_insert'")
        )
        await session.execute(text("DROP TRIGGER transcript_fts_insert"))
    started = time.perf_counter()
    for calls, metadata, said in corpus.batches():
        async with db.write() as session:
            connection = await session.connection()
            await connection.execute(insert(table_of(Call)), calls)
            await connection.execute(insert(table_of(CallMetadata)), metadata)
            await connection.execute(insert(table_of(TranscriptUtterance)), said)
        progress(int(calls[-1]["id"].split("-")[1]) + 1, corpus.calls, started)
    print(file=sys.stderr)
    async with db.write() as session:
        print("  building the FTS5 index", file=sys.stderr, flush=True)
        await session.execute(text("INSERT INTO transcript_fts (transcript_fts) VALUES ('rebuild')"))
        await session.execute(text(trigger))
    await settle_ceilings(db, quiet_for=0, batch=SETTLE_BATCH)  # as the lifecycle sweep would
    async with db.write() as session:
        await session.execute(text("ANALYZE"))


async def load_postgresql(db: Database, dsn: str, corpus: Corpus) -> None:
    """Calls through SQLAlchemy; utterances by ``COPY`` with the GIN index dropped, then re-created."""
    connection = await asyncpg.connect(dsn)
    try:
        index = await connection.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_transcript_utterance_search'"
        )
        await connection.execute("DROP INDEX ix_transcript_utterance_search")
        columns = ["call_id", "seq", "utterance", "ordinal", "role", "text", "occurred_at"]
        started = time.perf_counter()
        for calls, metadata, said in corpus.batches():
            async with db.write() as session:
                await session.execute(insert(table_of(Call)), calls)
                await session.execute(insert(table_of(CallMetadata)), metadata)
            records = [tuple(row[name] for name in columns) for row in said]
            await connection.copy_records_to_table("transcript_utterance", records=records, columns=columns)
            progress(int(calls[-1]["id"].split("-")[1]) + 1, corpus.calls, started)
        print("\n  building the GIN index", file=sys.stderr, flush=True)
        await connection.execute("SET maintenance_work_mem = '1GB'")
        await connection.execute(index)
        await settle_ceilings(db, quiet_for=0, batch=SETTLE_BATCH)  # as the lifecycle sweep would
        await connection.execute("VACUUM ANALYZE")
    finally:
        await connection.close()


async def count(db: Database, model: Any) -> int:
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


# (query, filters as SearchFilters fields, pages to skip before the timed one)
Shape = tuple[str, dict[str, Any], int]


def shapes(corpus: Corpus) -> dict[str, Shape]:
    newest, oldest = corpus.created(corpus.calls - 1), corpus.created(0)
    span = newest - oldest
    mid, rare = corpus.words[300], corpus.words[15_000]
    return {
        "very common word (please)": ("please", {}, 0),
        "… page 5": ("please", {}, 4),
        "frequent word (account)": ("account", {}, 0),
        f"mid word ({mid})": (mid, {}, 0),
        f"rare word ({rare})": (rare, {}, 0),
        "two words (account refund)": ("account refund", {}, 0),
        "common phrase": ('"speak to a manager"', {}, 0),
        "rare phrase": ('"reset link expired"', {}, 0),
        "prefix (ref*)": ("ref*", {}, 0),
        f"tail prefix ({corpus.words[2000][:3]}*)": (corpus.words[2000][:3] + "*", {}, 0),
        "common + role": ("please", {"role": "user"}, 0),
        "common + role + metadata.team": ("please", {"role": "user", "metadata": {"team": "team-3"}}, 0),
        "common + metadata.crm (1 call)": ("please", {"metadata": {"crm": f"crm-{corpus.calls // 2}"}}, 0),
        "common + callId": ("please", {"call_id": call_name(corpus.calls // 3)}, 0),
        "common + assistantId": ("please", {"assistant_id": "asst-2"}, 0),
        "common + createdAfter (newest 1 %)": ("please", {"created_after": newest - span / 100}, 0),
        "common + createdBefore (oldest 10 %)": ("please", {"created_before": oldest + span / 10}, 0),
        "common + createdBefore (oldest 10 %) page 2": ("please", {"created_before": oldest + span / 10}, 1),
        "rare word + createdBefore (oldest 10 %)": (rare, {"created_before": oldest + span / 10}, 0),
    }


def call_shapes(corpus: Corpus) -> dict[str, str]:
    """``GET /v1/calls?q=`` shapes. At 2,000,000 utterances ``words[90]`` is said about 21,000 times,
    ``words[300]`` 6,400 and ``words[500]`` 3,800: on either side of ``MANY_MATCHES`` (5,000), where SQLite
    switches from listing the matches' calls to checking the calls batch by batch."""
    return {
        "calls?q= very common word": "please",
        "calls?q= frequent word": "account",
        f"calls?q= word said ~1 % ({corpus.words[90]})": corpus.words[90],
        f"calls?q= mid word ({corpus.words[300]})": corpus.words[300],
        f"calls?q= word just under 5,000 ({corpus.words[500]})": corpus.words[500],
        "calls?q= common phrase": '"speak to a manager"',
        "calls?q= rare phrase": '"reset link expired"',
    }


class Statements:
    """Collects the SQL a piece of code runs, to show its plans."""

    def __init__(self, db: Database) -> None:
        self.db, self.seen = db, list[tuple[str, Any]]()
        self.recording = False
        event.listen(db.read_engine.sync_engine, "before_cursor_execute", self._before)

    def _before(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if self.recording:
            self.seen.append((statement, parameters))

    @contextlib.asynccontextmanager
    async def record(self) -> AsyncIterator[list[tuple[str, Any]]]:
        self.seen, self.recording = [], True
        try:
            yield self.seen
        finally:
            self.recording = False

    async def plans(self, statements: list[tuple[str, Any]]) -> str:
        explain = "EXPLAIN QUERY PLAN " if self.db.is_sqlite else "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) "
        out = []
        async with self.db.read() as session:
            connection = await session.connection()
            for statement, parameters in statements:
                if "transcript" not in statement and "utterance_ceiling" not in statement:
                    continue  # the page's recording offsets: primary-key reads
                rows = (await connection.exec_driver_sql(explain + statement, parameters)).all()
                lines = [" | ".join(str(value) for value in row[-1:]) for row in rows]
                out.append("    " + " ".join(statement.split())[:400] + "\n" + "\n".join(f"      {x}" for x in lines))
        return "\n".join(out)


async def timed(
    name: str, run: Callable[[], Awaitable[int]], args: argparse.Namespace, total: int | None
) -> dict[str, Any]:
    await run()  # warm the caches
    times: list[float] = []
    budget = time.perf_counter() + args.shape_seconds
    rows = 0
    while len(times) < args.queries and (len(times) < 5 or time.perf_counter() < budget):
        started = time.perf_counter()
        rows = await run()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    figures = {
        "p50_ms": round(statistics.median(times), 2),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
        "rows": rows,
        "matches": total,
        "samples": len(times),
    }
    print(
        f"  {name:42s} p50 {figures['p50_ms']:8.2f} ms  p99 {figures['p99_ms']:8.2f} ms  "
        f"rows {rows:3d}  matches {total if total is not None else '-':>9}  (n={len(times)})",
        file=sys.stderr,
        flush=True,
    )
    return figures


async def matches(db: Database, query: str, filters: SearchFilters) -> int:
    """Every match of a search, counted once with the service's own conditions (untimed)."""
    statement = SearchService(db).matching(parse_query(query), filters).subquery()
    async with db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(statement)) or 0)


async def measure(db: Database, corpus: Corpus, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    search, recorder = SearchService(db), Statements(db)
    figures: dict[str, dict[str, Any]] = {}
    for name, (query, options, skip) in shapes(corpus).items():
        if args.only and not any(part in name for part in args.only):
            continue
        filters = SearchFilters(**options)
        cursor = None
        for _ in range(skip):
            _, cursor = await search.search(query, filters, limit=20, cursor=cursor)

        async def page(query: str = query, filters: SearchFilters = filters, cursor: str | None = cursor) -> int:
            hits, _ = await search.search(query, filters, limit=20, cursor=cursor)
            return len(hits)

        figures[name] = await timed(name, page, args, await matches(db, query, filters) if args.count else None)
        if args.plans:
            async with recorder.record() as statements:
                await page()
            print(await recorder.plans(statements), file=sys.stderr)
    for name, query in call_shapes(corpus).items():
        if args.only and not any(part in name for part in args.only):
            continue

        async def listing(query: str = query) -> int:
            async with db.read() as session:
                listed = await CallFilters(saying=parse_query(query)).resolved_page(session, limit=51, cursor=None)
                return len((await session.scalars(listed)).all())

        total = None
        if args.count:
            async with db.read() as session:
                saying = CallsSaying(Call.id, parse_query(query))
                total = int(await session.scalar(select(func.count()).select_from(Call).where(saying)) or 0)
        figures[name] = await timed(name, listing, args, total)
        if args.plans:
            async with recorder.record() as statements:
                await listing()
            print(await recorder.plans(statements), file=sys.stderr)
    return figures


async def run(url: str, dsn: str | None, args: argparse.Namespace) -> dict[str, Any]:
    upgrade(url)
    db = Database(url)
    corpus = Corpus(args.calls, args.utterances)
    try:
        wanted = args.calls * args.utterances
        loaded = None
        have = await count(db, TranscriptUtterance)
        if have == wanted and await count(db, Call) == args.calls:
            print(f"  reusing the dataset: {have:,} utterances", file=sys.stderr)
        elif have:
            raise SystemExit(f"the dataset holds {have:,} utterances, not {wanted:,}: remove it or name another")
        else:
            started = time.perf_counter()
            if db.is_sqlite:
                await load_sqlite(db, corpus)
            else:
                assert dsn is not None
                await load_postgresql(db, dsn, corpus)
            loaded = round(time.perf_counter() - started, 1)
            print(f"  loaded in {loaded} s", file=sys.stderr)
        return {
            "utterances": await count(db, TranscriptUtterance),
            "load_seconds": loaded,
            "queries": {} if args.load_only else await measure(db, corpus, args),
        }
    finally:
        await db.dispose()


async def admin(dsn: str, sql: str, *args: Any) -> Any:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchval(sql, *args)
    finally:
        await connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--utterances", type=int, default=20, help="per call")
    parser.add_argument("--queries", type=int, default=200, help="samples per shape")
    parser.add_argument("--shape-seconds", type=float, default=20.0, help="stop sampling a slow shape after this")
    parser.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--sqlite-path", type=Path, help="keep the SQLite dataset here (reused if it fits)")
    parser.add_argument("--postgres-database", help="keep the PostgreSQL dataset in this database")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--plans", action="store_true", help="print each shape's statements and their plans")
    parser.add_argument("--no-count", dest="count", action="store_false", help="skip counting each shape's matches")
    parser.add_argument("--only", action="append", help="run the shapes whose name contains this (repeatable)")
    parser.add_argument("--load-only", action="store_true", help="build (or check) the datasets, measure nothing")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"calls": args.calls, "utterances_per_call": args.utterances}
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as folder:
            path = args.sqlite_path or Path(folder) / "bench.db"
            print(f"sqlite ({path})", file=sys.stderr)
            results["sqlite"] = await run(f"sqlite+aiosqlite:///{path}", None, args)
    if not args.skip_postgres:
        name = args.postgres_database or f"switchboard_bench_{uuid.uuid4().hex[:8]}"
        if not await admin(args.postgres_dsn, "SELECT 1 FROM pg_database WHERE datname = $1", name):
            await admin(args.postgres_dsn, f'CREATE DATABASE "{name}"')
        base = args.postgres_dsn.rsplit("/", 1)[0]
        try:
            print(f"postgresql ({name})", file=sys.stderr)
            url = f"{base}/{name}".replace("postgresql://", "postgresql+asyncpg://", 1)
            results["postgresql"] = await run(url, f"{base}/{name}", args)
        finally:
            if not args.postgres_database:
                await admin(args.postgres_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(results, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    asyncio.run(main())
