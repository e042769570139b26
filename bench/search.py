"""Transcript search benchmark: query latency over many calls' utterances, on SQLite and PostgreSQL.

    python bench/search.py --calls 100000 --utterances 20 [--postgres-dsn postgresql://postgres@127.0.0.1/postgres]
                           [--queries 200] [--json out.json]

Loads ``calls`` calls of ``utterances`` final utterances each (a Zipf vocabulary of 5,000 words, 4 to 16
words an utterance, both roles, a ``team`` in the metadata) straight into the tables the service writes
(the full-text index follows through its trigger or expression index), then times ``SearchService.search``
— the service's own statement, in process, without HTTP — for several query shapes: a common word, a
mid-frequency word, a rare word, a phrase, a prefix, and filtered searches. Figures per database and
shape: p50 and p99 in milliseconds and the matches of the query. PostgreSQL runs in a throwaway
database created and dropped here (``--postgres-dsn`` names the admin connection); ``--skip-sqlite`` /
``--skip-postgres`` run one.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from service.calls.metadata import index_rows
from service.db.engine import Database
from service.db.migrate import upgrade
from service.db.models import Call, CallMetadata, TranscriptUtterance
from service.db.statements import table_of
from service.search.service import SearchFilters, SearchService

VOCABULARY = 5_000
BATCH = 20_000


def words(rng: random.Random) -> list[str]:
    """A Zipf-like vocabulary: word ``wNNNN`` is about NNNN times rarer than ``w0001``; a few real ones."""
    real = ["refund", "cancel", "plan", "billing", "order", "delivery", "address", "manager", "thanks", "please"]
    return real + [f"w{index:04d}" for index in range(1, VOCABULARY - len(real) + 1)]


def utterance(rng: random.Random, vocabulary: list[str], weights: list[float]) -> str:
    return " ".join(rng.choices(vocabulary, weights, k=rng.randint(4, 16)))


async def load(db: Database, calls: int, per_call: int, seed: int = 17) -> None:
    rng = random.Random(seed)
    vocabulary = words(rng)
    weights = [1 / (rank + 1) for rank in range(len(vocabulary))]
    now = dt.datetime.now(dt.UTC)
    call_rows: list[dict[str, Any]] = []
    said: list[dict[str, Any]] = []
    started = time.perf_counter()

    async def flush() -> None:
        async with db.write() as session:
            connection = await session.connection()
            if call_rows:
                await connection.execute(insert(table_of(Call)), call_rows)
                index = [
                    row for call in call_rows for row in index_rows(call["id"], call["created_at"], call["metadata"])
                ]
                await connection.execute(insert(table_of(CallMetadata)), index)
            if said:
                await connection.execute(insert(table_of(TranscriptUtterance)), said)
        call_rows.clear()
        said.clear()

    for number in range(calls):
        created = now - dt.timedelta(seconds=calls - number)
        call_id = f"call-{number:07d}"
        call_rows.append(
            {
                "id": call_id,
                "status": "ended",
                "origin": "webhook",
                "customer": {},
                "metadata": {"team": f"team-{number % 10}"},
                "assistant_id": f"asst-{number % 5}",
                "listen_auth": False,
                "control_auth": False,
                "last_event_seq": per_call,
                "created_at": created,
                "updated_at": created,
            }
        )
        for seq in range(1, per_call + 1):
            said.append(
                {
                    "call_id": call_id,
                    "seq": seq,
                    "utterance": uuid.uuid4().hex[:32],
                    "ordinal": 1,
                    "role": "user" if seq % 2 else "assistant",
                    "text": utterance(rng, vocabulary, weights),
                    "occurred_at": created + dt.timedelta(seconds=seq),
                }
            )
        if len(said) >= BATCH:
            await flush()
            done = number + 1
            print(f"  loaded {done:,} calls ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
    await flush()


SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "common word": ("refund", {}),
    "mid word": ("w0100", {}),
    "rare word": ("w4000", {}),
    "two words": ("refund w0050", {}),
    "phrase": ('"refund cancel"', {}),
    "prefix": ("w012*", {}),
    "common + role + metadata": ("refund", {"role": "user", "metadata": {"team": "team-3"}}),
    "common + one call": ("refund", {"call_id": "call-0000042"}),
}


async def measure(db: Database, queries: int) -> dict[str, dict[str, float]]:
    search = SearchService(db)
    figures: dict[str, dict[str, float]] = {}
    for name, (text, options) in SHAPES.items():
        filters = SearchFilters(**options)
        await search.search(text, filters, limit=20, cursor=None)  # warm the caches
        times = []
        for _ in range(queries):
            started = time.perf_counter()
            hits, _ = await search.search(text, filters, limit=20, cursor=None)
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        figures[name] = {
            "p50_ms": round(statistics.median(times), 2),
            "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
            "hits": len(hits),
        }
        print(
            f"  {name:28s} p50 {figures[name]['p50_ms']:8.2f} ms  p99 {figures[name]['p99_ms']:8.2f} ms",
            file=sys.stderr,
        )
    return figures


async def run(url: str, args: argparse.Namespace) -> dict[str, Any]:
    upgrade(url)
    db = Database(url)
    try:
        started = time.perf_counter()
        await load(db, args.calls, args.utterances)
        loaded = time.perf_counter() - started
        async with db.read() as session:
            count = await session.scalar(select(func.count()).select_from(TranscriptUtterance))
        if not db.is_sqlite:
            async with db.write() as session:
                await session.execute(__import__("sqlalchemy").text("ANALYZE"))
        return {"utterances": count, "load_seconds": round(loaded, 1), "queries": await measure(db, args.queries)}
    finally:
        await db.dispose()


async def admin(dsn: str, sql: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--utterances", type=int, default=20)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--postgres-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, Any] = {"calls": args.calls, "utterances_per_call": args.utterances}
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory() as folder:
            print("sqlite", file=sys.stderr)
            results["sqlite"] = await run(f"sqlite+aiosqlite:///{folder}/bench.db", args)
    if not args.skip_postgres:
        name = f"switchboard_bench_{uuid.uuid4().hex[:8]}"
        await admin(args.postgres_dsn, f'CREATE DATABASE "{name}"')
        try:
            base = args.postgres_dsn.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
            print("postgresql", file=sys.stderr)
            results["postgresql"] = await run(f"{base}/{name}", args)
        finally:
            await admin(args.postgres_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
