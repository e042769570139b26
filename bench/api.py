"""API benchmark: webhook ingest throughput, relay overhead and ``GET /v1/calls`` latency, on SQLite and PostgreSQL.

    python bench/api.py [--backend sqlite|postgresql|both] [--messages 10000] [--relays 500] [--calls 100000]

For each backend, one invocation:

1. starts ``switchboard serve`` (one uvicorn process) on a fresh database — a SQLite file in a temporary
   folder, or a throwaway PostgreSQL database created here and dropped at the end;
2. **ingest**: a load generator in another process (``bench/_api_load.py``: httpx, asyncio, a pool of
   ``--concurrency`` connections) POSTs ``--messages`` realistic Vapi server messages (status-update,
   transcript, speech-update, conversation-update; no ``monitor``, so no listen session starts) spread over
   ``--ingest-calls`` calls to ``/webhooks/vapi``, after a short warm-up. Figures: acknowledged-and-stored
   webhooks per second of wall time, p50/p99 request latency (seen by the client, so with its queueing), and
   a check that the database holds exactly the acknowledged events with gap-free per-call ``seq``;
3. **relay** (the tap): ``--relays`` ``tool-calls`` messages, one at a time, for calls whose upstream is a
   bare server in this process; the figure is the time from the upstream's answer leaving it to
   Switchboard's answer arriving (relay, store question and answer, commit, answer);
4. **queries**: ``--calls`` calls are bulk-inserted straight into the ``call`` table (SQLAlchemy Core), then
   ``GET /v1/calls`` is timed with sequential requests (admin key): the first page, a cursor walk (each
   request follows the previous ``nextCursor``), ``status=ended``, ``customerNumber=``, ``metadata.crmId=``
   (about 4 calls each), and two ``metadata.<key>`` filters AND-ed that match many calls (a number and a
   string). The query plans are recorded too. ``metadata`` is indexed in ``call_metadata``, which the
   service keeps in step with each call; the bulk insert writes those rows too (``index_rows``).

The table goes to stdout; progress to stderr. Every child process is stopped and the temporary folder and
database removed on exit or Ctrl-C (children also die with us on SIGKILL, see ``_procs``). Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import random
import secrets
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
from sqlalchemy import Table, insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))
from _procs import BenchError, Child, ProcessGroup, free_port, git_describe, switchboard_argv, wait_http_ok

from service.calls.metadata import index_rows
from service.calls.service import CallFilters
from service.db.models import Call, CallMetadata

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_DIR = BENCH_DIR.parent

INGEST_TARGET_PER_SECOND = 1000.0  # on SQLite
QUERY_P99_TARGET_MS = 25.0
RELAY_P50_TARGET_MS, RELAY_P99_TARGET_MS = 2.0, 10.0  # on SQLite: upstream answer -> Vapi answer
RELAY_CALLS = 20
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
LOG_PROBLEMS = ("WARNING", "ERROR", "CRITICAL", "[warning", "[error", "[critical", "Traceback")
STATUS_WEIGHTS = {"ended": 90, "in-progress": 4, "ringing": 2, "queued": 2, "forwarding": 2}
ENDED_REASONS = ["customer-ended-call", "assistant-ended-call", "silence-timed-out", "customer-did-not-answer"]

_started = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _started:7.1f}s] {message}", file=sys.stderr, flush=True)


# -- figures --------------------------------------------------------------------------------------------


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


@dataclass(slots=True)
class QueryResult:
    kind: str
    label: str
    requests: int = 0
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    max_ms: float = float("nan")
    mean_rows: float = 0.0
    indexed: bool = True
    plan: list[str] = field(default_factory=list)
    note: str = ""


@dataclass(slots=True)
class BackendResult:
    backend: str
    ingest: dict[str, Any] = field(default_factory=dict)
    queries: list[QueryResult] = field(default_factory=list)
    relay: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return total - idle, total


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine_context() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    mem_total = ""
    with contextlib.suppress(OSError):
        mem_total = Path("/proc/meminfo").read_text().splitlines()[0].split(":")[1].strip()

    source = git_describe()

    return {
        "cpus": os.cpu_count(),
        "cpusUsable": len(os.sched_getaffinity(0)),
        "cpuModel": model,
        "memTotal": mem_total,
        "loadavgAtStart": loadavg(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "gitCommit": source["commit"],
        "serviceDirty": source["serviceDirty"],
        "server": "one `switchboard serve` process (uvicorn, one worker, uvloop)",
    }


# -- processes ------------------------------------------------------------------------------------------


async def start_py_spy(args: argparse.Namespace, procs: ProcessGroup, serve: Child, name: str) -> Child | None:
    if args.py_spy is None:
        return None
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    args.py_spy.mkdir(parents=True, exist_ok=True)
    out = args.py_spy / f"{name}.txt"
    argv = [exe, "record", "--pid", str(serve.pid), "--rate", "200", "--nonblocking", "--format", "raw", "-o", str(out)]
    progress(f"sampling serve with py-spy into {out} (its own CPU competes for the cores)")
    spy = await procs.start(f"py-spy-{name}", argv, stop_signal=signal.SIGINT)
    await asyncio.sleep(1.0)
    return spy


# -- databases ------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def throwaway_postgres(dsn: str) -> AsyncIterator[tuple[str, str]]:
    """A fresh PostgreSQL database (its SQLAlchemy URL), dropped on exit whatever happens."""
    import asyncpg

    name = f"switchboard_bench_api_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        version = await admin.fetchval("SHOW server_version")
    finally:
        await admin.close()
    progress(f"postgresql: created database {name} (server {version})")
    base = dsn.split("://", 1)[1].rsplit("/", 1)[0]
    try:
        yield f"postgresql+asyncpg://{base}/{name}", version
    finally:

        async def drop() -> None:
            conn = await asyncpg.connect(dsn)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()
            progress(f"postgresql: dropped database {name}")

        await asyncio.shield(drop())


def bench_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        return create_async_engine(url, connect_args={"timeout": 60})
    return create_async_engine(url)


@dataclass(frozen=True, slots=True)
class Seeded:
    numbers: list[str]
    crm_ids: list[str]
    seconds: float


async def seed_calls(engine: AsyncEngine, n: int, seed: int) -> Seeded:
    """``n`` calls over 30 days, ~4 per customer (number and crmId), 20 assistants, mostly ended."""
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC)
    customers = max(1, n // 4)
    numbers = [f"+1{rng.randrange(200, 999)}{rng.randrange(10**7):07d}" for _ in range(customers)]
    assistants = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(20)]
    statuses, weights = list(STATUS_WEIGHTS), list(STATUS_WEIGHTS.values())
    table = cast(Table, Call.__table__)
    index_table = cast(Table, CallMetadata.__table__)
    t0 = time.perf_counter()
    batch: list[dict[str, Any]] = []
    for i in range(n):
        c = rng.randrange(customers)
        created = now - dt.timedelta(seconds=rng.uniform(60, 30 * 86400))
        status = rng.choices(statuses, weights)[0]
        started = created + dt.timedelta(seconds=rng.uniform(3, 25)) if status in ("ended", "in-progress") else None
        ended = started + dt.timedelta(seconds=rng.uniform(20, 600)) if started and status == "ended" else None
        batch.append(
            {
                "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                "type": "outboundPhoneCall" if rng.random() < 0.7 else "inboundPhoneCall",
                "status": status,
                "ended_reason": rng.choice(ENDED_REASONS) if status == "ended" else None,
                "assistant_id": assistants[rng.randrange(20)],
                "phone_number_id": "pn-bench-0001",
                "customer": {"number": numbers[c], "name": f"Customer {c}"},
                "customer_number": numbers[c],
                "metadata": {"crmId": f"crm-{c:07d}", "campaign": f"campaign-{c % 12}", "priority": c % 3},
                "listen_url": None,
                "control_url": None,
                "listen_auth": False,
                "control_auth": False,
                "origin": rng.choice(("api", "api", "webhook", "import")),
                "started_at": started,
                "ended_at": ended,
                "last_event_seq": 0,
                "created_at": created,
                "updated_at": ended or started or created,
                "listen_owner": None,
                "listen_lease_until": None,
            }
        )
        if len(batch) == 5000 or i == n - 1:
            index = [row for call in batch for row in index_rows(call["id"], call["created_at"], call["metadata"])]
            async with engine.begin() as conn:
                await conn.execute(insert(table), batch)
                await conn.execute(insert(index_table), index)
            batch = []
            if (i + 1) % 25_000 == 0 or i == n - 1:
                progress(f"inserted {i + 1}/{n} calls")
    return Seeded(numbers, [f"crm-{c:07d}" for c in range(customers)], time.perf_counter() - t0)


PLAN_FILTERS = {
    # The filters of each query kind; the plan is the one of the statement list_calls sends for them.
    "first": lambda _v: CallFilters(),
    "status": lambda _v: CallFilters(status="ended"),
    "customerNumber": lambda v: CallFilters(customer_number=v),
    "metadata": lambda v: CallFilters(metadata={"crmId": v}),
    "metadataAnd": lambda v: CallFilters(metadata={"priority": "1", "campaign": v}),
}


async def query_plan(engine: AsyncEngine, backend: str, kind: str, value: str) -> list[str]:
    filters = PLAN_FILTERS.get(kind)
    if filters is None:
        return []
    statement = filters(value).page(limit=51, cursor=None)
    compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})
    # What literal_binds leaves as a parameter (SQLite's LIMIT -1 before an OFFSET), positional.
    params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    explain = "EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN (ANALYZE, BUFFERS OFF) "
    async with engine.connect() as conn:
        rows = (await conn.exec_driver_sql(explain + str(compiled), params)).all()
    return [str(row[-1]) for row in rows]


# -- phases ---------------------------------------------------------------------------------------------


async def run_ingest(
    args: argparse.Namespace, procs: ProcessGroup, serve: Child, base: str, secret: str, engine: AsyncEngine, name: str
) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(BENCH_DIR / "_api_load.py"),
        "--url",
        base,
        "--secret",
        secret,
        "--messages",
        str(args.messages),
        "--calls",
        str(args.ingest_calls),
        "--concurrency",
        str(args.concurrency),
        "--warmup",
        str(args.warmup),
        "--seed",
        str(args.seed),
    ]
    spy = await start_py_spy(args, procs, serve, f"{name}-ingest")
    progress(f"{name}: ingest: {args.messages} messages over {args.ingest_calls} calls, concurrency {args.concurrency}")
    load = await procs.start(f"{name}-load", argv, env=os.environ, pipes=True)
    assert load.process.stdout is not None
    result: dict[str, Any] | None = None
    window: tuple[float, tuple[int, int], float] | None = None
    async for raw in load.process.stdout:
        line = json.loads(raw)
        if "progress" in line:
            progress(f"{name}: load: {line['progress']}")
            if window is None and line["progress"].startswith("warm-up"):
                window = (serve.usage().cpu_seconds, machine_ticks(), time.monotonic())
        elif "result" in line:
            result = line["result"]
    # Wait for the exit before stop(): Popen.send_signal() polls first, and a poll() that reaps an exited
    # child races asyncio's child watcher (which then reports 255).
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(load.process.wait(), 30)
    code = await procs.stop(load)
    if spy is not None:
        await procs.stop(spy)
    if result is None or code != 0:
        raise BenchError(f"the load generator failed ({code}):\n{load.log_tail()}")
    if window is not None:
        cpu0, (busy0, total0), _ = window
        busy1, total1 = machine_ticks()
        # The window includes the load generator's exit, a fraction of a second.
        result["serveCpuSeconds"] = serve.usage().cpu_seconds - cpu0
        result["machineBusyFraction"] = (busy1 - busy0) / max(1, total1 - total0)
    result["throughput"] = result["stored"] / result["wallSeconds"] if result["wallSeconds"] else 0.0
    result["loadavgAfter"] = loadavg()
    async with engine.connect() as conn:
        events = (await conn.execute(text("SELECT count(*) FROM call_event WHERE source = 'vapi'"))).scalar_one()
        calls = (await conn.execute(text("SELECT count(*) FROM call"))).scalar_one()
        gaps = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT call_id, max(seq) AS m, count(*) AS c "
                    "FROM call_event GROUP BY call_id) AS per_call WHERE m <> c"
                )
            )
        ).scalar_one()
    acknowledged = result["stored"] + result["warmupStored"]
    result["dbVapiEvents"] = events
    result["dbCalls"] = calls
    result["acknowledgedStored"] = acknowledged
    result["persistedOk"] = events == acknowledged and not result["errors"] and gaps == 0
    result["callsWithSeqGaps"] = gaps
    lat = result["latencyMs"]
    progress(
        f"{name}: ingest: {result['throughput']:.0f} webhooks/s, p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms; "
        f"database holds {events} webhook events for {acknowledged} acknowledged ({calls} calls, {gaps} seq gaps)"
    )
    return result


class RelayUpstream:
    """The customer's server for the relay measurement: a bare ASGI app (no framework, so that its own
    cost stays out of the figure) that answers every tool call at once and notes when its answer left."""

    def __init__(self) -> None:
        self.answered_at: dict[str, float] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        tool_call_id = json.loads(body)["message"]["toolCallList"][0]["id"]
        answer = {"results": [{"name": "lookup", "toolCallId": tool_call_id, "result": "Order 42 ships Monday."}]}
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        self.answered_at[tool_call_id] = time.perf_counter()
        await send({"type": "http.response.body", "body": json.dumps(answer).encode()})


async def run_relay(
    args: argparse.Namespace, client: httpx.AsyncClient, base: str, secret: str, engine: AsyncEngine, name: str
) -> dict[str, Any]:
    """Relay overhead: sequential ``tool-calls`` for calls whose upstream is a server in this process;
    the time from the upstream's answer leaving it to Switchboard's answer arriving here (relay, store
    the question and the answer, commit, answer)."""
    import uvicorn

    upstream = RelayUpstream()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(upstream, host="127.0.0.1", port=port, lifespan="off", log_config=None, access_log=False)
    )
    serving = asyncio.create_task(server.serve(), name="relay-upstream")
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn has no event to wait on
            await asyncio.sleep(0.01)
        now = dt.datetime.now(dt.UTC)
        upstream_json = {"url": f"http://127.0.0.1:{port}/crm/vapi", "headers": {}, "source": "call"}
        rows = [
            {
                "id": f"relay-{uuid.uuid4()}",
                "status": "in-progress",
                "origin": "api",
                "customer": {},
                "metadata": {},
                "listen_auth": False,
                "control_auth": False,
                "last_event_seq": 0,
                "upstream": upstream_json,
                "created_at": now,
                "updated_at": now,
            }
            for _ in range(RELAY_CALLS)
        ]
        async with engine.begin() as conn:
            await conn.execute(insert(cast(Table, Call.__table__)), rows)
        progress(f"{name}: relay: {args.relays} tool calls over {RELAY_CALLS} calls, one at a time")
        overhead: list[float] = []
        total: list[float] = []
        headers = {"X-Vapi-Secret": secret, "Content-Type": "application/json"}
        for i in range(-20, args.relays):  # 20 untimed first
            tool_call_id = f"tc-{i}-{uuid.uuid4().hex[:8]}"
            message = {
                "type": "tool-calls",
                "timestamp": int(time.time() * 1000) + i,
                "call": {"id": rows[i % RELAY_CALLS]["id"]},
                "toolCallList": [
                    {"id": tool_call_id, "type": "function", "function": {"name": "lookup", "arguments": "{}"}}
                ],
            }
            started = time.perf_counter()
            response = await client.post(f"{base}/webhooks/vapi", json={"message": message}, headers=headers)
            arrived = time.perf_counter()
            if response.status_code != 200 or response.json()["results"][0]["toolCallId"] != tool_call_id:
                raise BenchError(f"relay answered {response.status_code}: {response.text[:300]}")
            if i >= 0:
                overhead.append((arrived - upstream.answered_at[tool_call_id]) * 1000)
                total.append((arrived - started) * 1000)
    finally:
        server.should_exit = True
        await serving
    result = {
        "relays": len(overhead),
        "overheadMs": {"p50": quantile(overhead, 0.5), "p99": quantile(overhead, 0.99), "max": max(overhead)},
        "roundTripMs": {"p50": quantile(total, 0.5), "p99": quantile(total, 0.99)},
    }
    lat = result["overheadMs"]
    progress(f"{name}: relay overhead p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms")
    return result


async def time_requests(
    client: httpx.AsyncClient,
    n: int,
    budget: float,
    request: Callable[[int], Awaitable[httpx.Response]],
) -> tuple[list[float], list[int], list[httpx.Response]]:
    """``n`` sequential requests (fewer if ``budget`` seconds run out); latencies (ms) and row counts."""
    for i in range(3):  # warm-up, untimed
        (await request(-1 - i)).raise_for_status()
    latencies: list[float] = []
    rows: list[int] = []
    responses: list[httpx.Response] = []
    deadline = time.monotonic() + budget
    for i in range(n):
        start = time.perf_counter()
        response = await request(i)
        latencies.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise BenchError(f"GET {response.request.url} answered {response.status_code}: {response.text[:300]}")
        rows.append(len(response.json()["data"]))
        responses.append(response)
        if time.monotonic() > deadline:
            break
    return latencies, rows, responses


async def run_queries(
    args: argparse.Namespace,
    client: httpx.AsyncClient,
    base: str,
    admin_key: str,
    engine: AsyncEngine,
    backend: str,
    seeded: Seeded,
) -> list[QueryResult]:
    url = f"{base}/v1/calls"
    headers = {"Authorization": f"Bearer {admin_key}"}
    rng = random.Random(args.seed + 1)
    n = args.requests
    results: list[QueryResult] = []

    def get(params: dict[str, Any]) -> Awaitable[httpx.Response]:
        return client.get(url, params=params, headers=headers)

    def finish(result: QueryResult, latencies: list[float], rows: list[int]) -> None:
        result.requests = len(latencies)
        result.p50_ms, result.p99_ms = quantile(latencies, 0.5), quantile(latencies, 0.99)
        result.max_ms = max(latencies, default=float("nan"))
        result.mean_rows = sum(rows) / len(rows) if rows else 0.0
        results.append(result)
        progress(
            f"{backend}: {result.label}: p50 {result.p50_ms:.1f} ms, p99 {result.p99_ms:.1f} ms "
            f"over {result.requests} requests ({result.mean_rows:.1f} rows/page) {result.note}"
        )

    # 1. First page.
    result = QueryResult("first", "first page ?limit=50")
    latencies, rows, _ = await time_requests(client, n, args.query_budget, lambda _i: get({"limit": 50}))
    result.plan = await query_plan(engine, backend, "first", "")
    finish(result, latencies, rows)

    # 2. Cursor walk: each request follows the previous nextCursor, so page k is k*50 rows deep.
    cursor: str | None = None
    restarts = 0

    async def walk(i: int) -> httpx.Response:
        nonlocal cursor, restarts
        params: dict[str, Any] = {"limit": 50}
        if i >= 0 and cursor:
            params["cursor"] = cursor
        response = await get(params)
        if i >= 0 and response.status_code == 200:
            cursor = response.json().get("nextCursor")
            if cursor is None:
                restarts += 1
        return response

    result = QueryResult("cursor", "cursor walk ?limit=50&cursor=")
    latencies, rows, _ = await time_requests(client, n, args.query_budget, walk)
    depth = len(latencies) * 50
    result.note = f"(pages 2-{len(latencies) + 1}, down to row {depth:,}{f', wrapped {restarts}x' if restarts else ''})"
    finish(result, latencies, rows)

    # 3. status=ended (90 % of the calls).
    result = QueryResult("status", "?status=ended&limit=50")
    latencies, rows, _ = await time_requests(client, n, args.query_budget, lambda _i: get({"status": "ended"}))
    result.plan = await query_plan(engine, backend, "status", "")
    finish(result, latencies, rows)

    # 4. customerNumber (about 4 calls each).
    result = QueryResult("customerNumber", "?customerNumber=<number>")
    latencies, rows, _ = await time_requests(
        client, n, args.query_budget, lambda _i: get({"customerNumber": rng.choice(seeded.numbers)})
    )
    result.plan = await query_plan(engine, backend, "customerNumber", seeded.numbers[0])
    finish(result, latencies, rows)

    # 5. metadata.crmId (about 4 calls each).
    result = QueryResult("metadata", "?metadata.crmId=<id>")
    latencies, rows, _ = await time_requests(
        client, n, args.query_budget, lambda _i: get({"metadata.crmId": rng.choice(seeded.crm_ids)})
    )
    if len(latencies) < n:
        result.note = f"(stopped after {len(latencies)} requests: --query-budget {args.query_budget:g} s)"
    result.plan = await query_plan(engine, backend, "metadata", seeded.crm_ids[0])
    finish(result, latencies, rows)

    # 6. metadata.priority (a number, 1/3 of the calls) AND metadata.campaign (1/12; c % 12 in 1, 4, 7, 10 has
    #    c % 3 == 1): 1/12 of the calls, read from the priority range (the first filter drives the query).
    result = QueryResult("metadataAnd", "?metadata.priority=1&metadata.campaign=<c>")
    latencies, rows, _ = await time_requests(
        client,
        n,
        args.query_budget,
        lambda _i: get({"metadata.priority": "1", "metadata.campaign": f"campaign-{rng.choice((1, 4, 7, 10))}"}),
    )
    if len(latencies) < n:
        result.note = f"(stopped after {len(latencies)} requests: --query-budget {args.query_budget:g} s)"
    result.plan = await query_plan(engine, backend, "metadataAnd", "campaign-1")
    finish(result, latencies, rows)
    return results


async def run_backend(
    args: argparse.Namespace, procs: ProcessGroup, client: httpx.AsyncClient, tmp: Path, backend: str
) -> BackendResult:
    out = BackendResult(backend)
    folder = tmp / backend
    folder.mkdir()
    async with contextlib.AsyncExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{folder}/switchboard.db"
            out.context["database"] = f"SQLite {sqlite3.sqlite_version}, WAL, file in {folder}"
        else:
            url, version = await stack.enter_async_context(throwaway_postgres(args.pg_dsn))
            out.context["database"] = f"PostgreSQL {version}, throwaway database"
        secret, admin_key = secrets.token_hex(16), secrets.token_hex(16)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
            "SWITCHBOARD_DATABASE_URL": url,
            "SWITCHBOARD_STORAGE_URL": f"file://{folder}/recordings",
            "SWITCHBOARD_WEBHOOK_SECRET": secret,
            "SWITCHBOARD_ADMIN_API_KEY": admin_key,
            "SWITCHBOARD_LOG_LEVEL": "warning",
        }
        if backend == "postgresql":
            env["SWITCHBOARD_AUTO_MIGRATE"] = "1"
        progress(f"{backend}: starting switchboard serve on {base}")
        serve = await procs.start(
            f"{backend}-serve", switchboard_argv("serve", "--port", str(port)), env=env, cwd=folder
        )
        stack.push_async_callback(lambda: asyncio.shield(procs.stop(serve)))
        await wait_http_ok(client, f"{base}/readyz", serve)
        (await client.get(f"{base}/v1/calls", headers={"Authorization": f"Bearer {admin_key}"})).raise_for_status()
        engine = bench_engine(url)
        stack.push_async_callback(engine.dispose)

        if args.messages > 0:
            out.context["loadavgBeforeIngest"] = loadavg()
            out.ingest = await run_ingest(args, procs, serve, base, secret, engine, backend)

        if args.relays > 0:
            out.relay = await run_relay(args, client, base, secret, engine, backend)

        if args.calls > 0:
            progress(f"{backend}: inserting {args.calls} calls straight into the call table")
            seeded = await seed_calls(engine, args.calls, args.seed)
            out.context["seedSeconds"] = round(seeded.seconds, 1)
            if backend == "postgresql":
                # autovacuum would analyse a table that grew this much within a minute; do it now.
                async with engine.begin() as conn:
                    await conn.execute(text("ANALYZE call, call_metadata"))
                out.notes.append(
                    "postgresql: ANALYZE call, call_metadata after the bulk insert (what autovacuum does soon after)"
                )
            else:
                out.notes.append("sqlite: no ANALYZE after the bulk insert (the service never runs it)")
            out.context["loadavgBeforeQueries"] = loadavg()
            spy = await start_py_spy(args, procs, serve, f"{backend}-queries")
            out.queries = await run_queries(args, client, base, admin_key, engine, backend, seeded)
            if spy is not None:
                await procs.stop(spy)
            out.context["loadavgAfterQueries"] = loadavg()

        code = await procs.stop(serve)
        logged = [line for line in serve.log_tail(100_000).splitlines() if any(m in line for m in LOG_PROBLEMS)]
        if logged:
            out.notes.append(f"{backend}: serve logged {len(logged)} warnings/errors, first: {logged[0][:200]}")
        if code not in (0, None, -signal.SIGTERM):  # uvicorn re-raises SIGTERM after a clean shutdown
            out.notes.append(f"{backend}: serve exited with {code}")
    return out


# -- report ---------------------------------------------------------------------------------------------


def table(results: list[BackendResult], context: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str, str, str]] = []
    for r in results:
        if r.ingest:
            i = r.ingest
            lat = i["latencyMs"]
            figure = (
                f"{i['throughput']:,.0f} webhooks/s (p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms, "
                f"c={i['concurrency']})"
            )
            if r.backend == "sqlite":
                target, verdict = (
                    f">= {INGEST_TARGET_PER_SECOND:,.0f}/s",
                    _pass(i["throughput"] >= INGEST_TARGET_PER_SECOND),
                )
            else:
                target, verdict = "(sqlite only)", "info"
            rows.append((r.backend, "webhook ingest", figure, target, verdict))
            figure = (
                f"{i['dbVapiEvents']:,} in db / {i['acknowledgedStored']:,} acked, {i['callsWithSeqGaps']} seq gaps"
            )
            if i["errors"]:
                figure += f", errors {i['errors']}"
            rows.append((r.backend, "  persisted = acknowledged", figure, "equal, 0 errors", _pass(i["persistedOk"])))
        if r.relay:
            lat = r.relay["overheadMs"]
            figure = f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms (n={r.relay['relays']}, one at a time)"
            if r.backend == "sqlite":
                target = f"p50 < {RELAY_P50_TARGET_MS:g} ms, p99 < {RELAY_P99_TARGET_MS:g} ms"
                verdict = _pass(lat["p50"] < RELAY_P50_TARGET_MS and lat["p99"] < RELAY_P99_TARGET_MS)
            else:
                target, verdict = "(sqlite only)", "info"
            rows.append((r.backend, "relay overhead (upstream -> Vapi)", figure, target, verdict))
        for q in r.queries:
            figure = f"p50 {q.p50_ms:.1f} ms, p99 {q.p99_ms:.1f} ms (n={q.requests}, {q.mean_rows:.0f} rows)"
            rows.append((r.backend, f"GET /v1/calls {q.label}", figure, f"p99 < {QUERY_P99_TARGET_MS:g} ms",
                         _pass(q.p99_ms < QUERY_P99_TARGET_MS)))  # fmt: skip
    headers = ("backend", "measurement", "figure", "target", "result")
    widths = [max(len(h), *(len(row[k]) for row in rows)) for k, h in enumerate(headers)] if rows else []
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.append("")
    lines.append(
        f"machine: {context['cpusUsable']} usable cores ({context['cpuModel']}), {context['memTotal']}, "
        f"load average at start {context['loadavgAtStart']}; Python {context['python']}, SQLite {context['sqlite']}"
    )
    lines.append(f"server: {context['server']}; load generator and query client in other processes, same machine")
    for r in results:
        c = r.context
        bits = [c.get("database", "")]
        if r.ingest:
            i = r.ingest
            bits.append(
                f"ingest: {i['sent']:,} messages over {i['calls']} calls (+{i['warmupSent']} warm-up), "
                f"mean body {i['meanBodyBytes']:.0f} B; serve used {i.get('serveCpuSeconds', 0) / i['wallSeconds']:.2f}"
                f" cores, load generator {i['clientCpuSeconds'] / i['wallSeconds']:.2f}, machine busy "
                f"{100 * i.get('machineBusyFraction', 0):.0f}%; loadavg before {c.get('loadavgBeforeIngest')}, "
                f"after {i['loadavgAfter']}"
            )
        if r.queries:
            bits.append(
                f"queries: {c.get('seededCalls', '')}calls inserted in {c.get('seedSeconds')} s; loadavg "
                f"{c.get('loadavgBeforeQueries')} -> {c.get('loadavgAfterQueries')}"
            )
        lines.append(f"{r.backend}: " + "; ".join(b for b in bits if b))
        for q in r.queries:
            if (not q.indexed or q.kind.startswith("metadata")) and q.plan:
                lines.append(f"{r.backend}: plan of {q.label.split()[0]}: " + " | ".join(q.plan[:4]))
        lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


def _pass(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def to_json(results: list[BackendResult], context: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    return {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "machine": context,
        "targets": {"ingestPerSecondSqlite": INGEST_TARGET_PER_SECOND, "queryP99Ms": QUERY_P99_TARGET_MS},
        "results": [
            {
                "backend": r.backend,
                "ingest": r.ingest,
                "relay": r.relay,
                "queries": [
                    {
                        "kind": q.kind,
                        "label": q.label,
                        "requests": q.requests,
                        "p50Ms": q.p50_ms,
                        "p99Ms": q.p99_ms,
                        "maxMs": q.max_ms,
                        "meanRows": q.mean_rows,
                        "indexed": q.indexed,
                        "plan": q.plan,
                        "pass": q.p99_ms < QUERY_P99_TARGET_MS,
                    }
                    for q in r.queries
                ],
                "notes": r.notes,
                "context": r.context,
            }
            for r in results
        ],
    }


async def amain(args: argparse.Namespace) -> int:
    context = machine_context()
    progress(f"machine: {context['cpusUsable']} cores, load average {context['loadavgAtStart']}")
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    tmp = Path(tempfile.mkdtemp(prefix="switchboard-bench-api-"))
    results: list[BackendResult] = []
    try:
        async with ProcessGroup(tmp) as procs, httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as client:
            for backend in backends:
                result = await run_backend(args, procs, client, tmp, backend)
                result.context["seededCalls"] = f"{args.calls:,} "
                results.append(result)
    finally:
        if args.keep:
            progress(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(table(results, context))
    if args.json:
        args.json.write_text(json.dumps(to_json(results, context, args), indent=2, default=str))
        progress(f"wrote {args.json}")
    failed = any(
        (r.backend == "sqlite" and r.ingest and r.ingest["throughput"] < INGEST_TARGET_PER_SECOND)
        or (r.ingest and not r.ingest["persistedOk"])
        or any(q.p99_ms >= QUERY_P99_TARGET_MS for q in r.queries)
        or (
            r.backend == "sqlite"
            and r.relay
            and not (
                r.relay["overheadMs"]["p50"] < RELAY_P50_TARGET_MS
                and r.relay["overheadMs"]["p99"] < RELAY_P99_TARGET_MS
            )
        )
        for r in results
    )
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--messages", type=int, default=10_000, help="webhooks to send (0: skip ingest)")
    parser.add_argument("--ingest-calls", type=int, default=200, help="calls the webhooks are spread over")
    parser.add_argument("--concurrency", type=int, default=48, help="requests in flight from the load generator")
    parser.add_argument("--warmup", type=int, default=200, help="untimed webhooks sent first")
    parser.add_argument("--relays", type=int, default=500, help="tool calls relayed to an upstream (0: skip)")
    parser.add_argument("--calls", type=int, default=100_000, help="calls to insert for the queries (0: skip)")
    parser.add_argument("--requests", type=int, default=500, help="sequential requests per query kind")
    parser.add_argument("--query-budget", type=float, default=60.0, help="at most this many seconds per query kind")
    parser.add_argument("--pg-dsn", default=os.environ.get("SWITCHBOARD_BENCH_POSTGRES_DSN", DEFAULT_PG_DSN))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, SQLite file)")
    parser.add_argument("--py-spy", type=Path, help="sample serve with py-spy (raw collapsed stacks) into this folder")
    args = parser.parse_args()
    try:
        return asyncio.run(amain(args))
    except KeyboardInterrupt:
        progress("interrupted: children stopped, temporary files removed")
        return 130
    except BenchError as exc:
        progress(f"error: {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
