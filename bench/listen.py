"""Listen-path benchmark: N concurrent simulated calls recorded by Switchboard, a naive baseline and a floor.

    python bench/listen.py --calls 200 --seconds 20 [--skip-naive] [--skip-floor] [--json out.json]

One invocation starts the Vapi simulator (``switchboard simulate``, pace 1: real time) in its own process
and runs up to three phases against it, one after the other, each with N calls of S seconds of audio:

- ``switchboard`` — ``switchboard serve`` (SQLite + local files in a temporary folder); the calls are placed
  through its ``POST /v1/calls``, and the phase ends when every recording is finalised;
- ``floor`` — a bare ``websockets`` client writing each frame with ``os.write`` (``bench/naive_listener.py``);
- ``naive`` — the seed note's approach: the whole call kept in memory, ``buf = buf + frame``, written on close.

The baselines get their calls straight from the simulator's ``POST /call``. Phases run one after the other
so that each listener meets the same load and the simulator (about 0.8 core at 200 calls) serves one
listener at a time. On a 2-core machine everything competes, so CPU is process CPU time from /proc, never
wall time. Figures per phase:

- lost bytes: the call's audio (the simulator's ``endFrame`` times 1,280 bytes) minus the bytes stored, summed;
  stored audio is also checked against the simulator's SHA-256 for calls recorded on one connection;
- CPU s per call-minute: the listener process's user + system CPU from the first call placed to the last
  recording stored, divided by the minutes of audio;
- peak RSS (VmHWM) and RSS per session: (peak - RSS before the first call) / N;
- lag: the longest time from a call's end (per the simulator) to its recording being complete.

``--burst`` plays a dialer: every call placed at once, a ``call.answered`` rule saying something, and per
call the time from the simulator sending the answered webhook to the say reaching the call's control URL
(both on the simulator's clock; its webhook log records ``sentAt`` for this bench). Only Switchboard runs.

Progress goes to standard error, the table to standard output. Every child process is stopped on exit or
Ctrl-C (and dies with us even on SIGKILL); the temporary folder is removed unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import json
import os
import platform
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _procs import BenchError, Child, ProcessGroup, Usage, free_port, git_describe, switchboard_argv, wait_http_ok

T = TypeVar("T")

FRAME_BYTES = 1280  # 20 ms of 16 kHz stereo s16le
BYTES_PER_SECOND = 16_000 * 2 * 2
FINAL_RECORDING = frozenset({"completed", "partial", "failed"})
PLACE_CONCURRENCY = 10
POLL_SECONDS = 1.0
LOG_PROBLEMS = ("WARNING", "ERROR", "CRITICAL", "[warning", "[error", "[critical", "Traceback")
BENCH_DIR = Path(__file__).resolve().parent
# --burst: every call is greeted when answered (the latency measured); JSON is YAML 1.2.
BURST_RULES = json.dumps(
    {"rules": [{"name": "burst-greeting", "on": "call.answered", "say": "This call is recorded for quality."}]}
)
PROJECT_DIR = BENCH_DIR.parent

_started = time.monotonic()


def progress(message: str) -> None:
    print(f"[{time.monotonic() - _started:7.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class PhaseResult:
    """Figures of one listener over one set of calls."""

    listener: str
    calls: int
    call_seconds: float
    audio_seconds: float = 0.0
    expected_bytes: int = 0
    sent_bytes: int = 0
    stored_bytes: int = 0
    lost_bytes: int = 0
    extra_bytes: int = 0
    sha256_checked: int = 0
    sha256_mismatches: int = 0
    calls_not_completed: int = 0
    late_start_frames: int = 0
    late_connections: int = 0
    connect_after_create: dict[str, float] = field(default_factory=dict)
    max_connect_after_answer: float | None = None
    finished: bool = True
    cpu_seconds: float = 0.0
    window_seconds: float = 0.0
    cpu_per_call_minute: float = 0.0
    mean_cores: float = 0.0
    baseline_rss_bytes: int = 0
    peak_rss_bytes: int = 0
    rss_per_session_bytes: float = 0.0
    mid_rss_bytes: int = 0  # RSS half-way through the calls (every one live): session state, no ramp or end burst
    end_rss_bytes: int = 0  # RSS once every call is finished: what calls leave behind (switchboard phase)
    max_lag_seconds: float | None = None
    simulator_cpu_seconds: float = 0.0
    machine_busy: float = 0.0
    exit_code: int | None = None
    workers: int = 1
    cpu_by_process: list[float] = field(default_factory=list)
    calls_per_core: float = 0.0
    answered_say: dict[str, float] = field(default_factory=dict)
    answer_spread_seconds: float | None = None
    notes: list[str] = field(default_factory=list)


async def rss_later(child: Child, seconds: float) -> int:
    """The child's RSS ``seconds`` from now (0 if it is gone by then)."""
    await asyncio.sleep(seconds)
    return child.usage().rss_bytes if child.alive() else 0


# -- memory over time (--memory-trace) -----------------------------------------------------------------

MEMORY_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile", "Threads")


class MemoryTrace:
    """Samples a process's ``/proc/<pid>/status`` (RSS, peak, anonymous vs file-backed, threads) and its
    open descriptors (SQLite files, sockets) every ``interval`` seconds into a JSON-lines file, with
    marks for the phase's moments (placed, ended, finalised): where and when the peak comes."""

    def __init__(self, path: Path, pid: int, interval: float = 0.1) -> None:
        self.path = path
        self.pid = pid
        self.interval = interval
        self._t0 = time.monotonic()
        self._out = path.open("w")
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> dict[str, Any]:
        row: dict[str, Any] = {"t": round(time.monotonic() - self._t0, 2)}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in MEMORY_FIELDS:
                row[key] = int(value.split()[0])  # kB, or a count for Threads
        sqlite = sockets = 0
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                sqlite += target.endswith(".db")
                sockets += target.startswith("socket:")
        row["sqliteFds"], row["sockets"] = sqlite, sockets
        return row

    def mark(self, what: str) -> None:
        self._out.write(json.dumps({"t": round(time.monotonic() - self._t0, 2), "mark": what}) + "\n")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self._out.write(json.dumps(self.sample()) + "\n")
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="memory-trace")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._out.close()
        progress(f"memory trace written to {self.path}")


# -- machine-wide CPU (to show how contended the 2 cores were) ----------------------------------------


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies over all CPUs from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return total - idle, total


# -- helpers -------------------------------------------------------------------------------------------


async def gather_limited(limit: int, jobs: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    semaphore = asyncio.Semaphore(limit)

    async def run(job: Callable[[], Awaitable[T]]) -> T:
        async with semaphore:
            return await job()

    return list(await asyncio.gather(*(run(job) for job in jobs)))


def parse_time(value: str) -> float:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def check_files(files: dict[str, dict[str, Any]]) -> dict[str, tuple[int, str | None, bool]]:
    """Size and SHA-256 of each baseline recording (then deleted, to keep the disk small on long runs)."""
    stored: dict[str, tuple[int, str | None, bool]] = {}
    for call_id, entry in files.items():
        path = Path(entry["path"])
        if not path.exists():
            stored[call_id] = (0, None, False)
            continue
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
        stored[call_id] = (path.stat().st_size, digest.hexdigest(), entry["error"] is None)
        path.unlink()
    return stored


class Simulator:
    """The simulator process and its REST and ``/_sim`` surfaces."""

    def __init__(self, child: Child, base_url: str, client: httpx.AsyncClient) -> None:
        self.child = child
        self.base_url = base_url
        self._client = client

    async def place_call(self, n: int) -> tuple[str, str]:
        body = {
            "assistantId": "bench-assistant",
            "phoneNumberId": "bench-number",
            "customer": {"number": f"+1415555{n % 10000:04d}"},
            "assistantOverrides": {"monitorPlan": {"listenEnabled": True}},
        }
        response = await self._client.post(f"{self.base_url}/call", json=body, timeout=30.0)
        response.raise_for_status()
        call = response.json()
        return str(call["id"]), str(call["monitor"]["listenUrl"])

    async def calls(self, ids: set[str]) -> dict[str, dict[str, Any]]:
        response = await self._client.get(f"{self.base_url}/_sim/calls", timeout=30.0)
        response.raise_for_status()
        return {call["id"]: call for call in response.json() if call["id"] in ids}

    async def connect_times(self, ids: set[str]) -> dict[str, tuple[float, float | None]]:
        """Per call: when the simulator created it and when it was answered (audio starts), wall clock."""
        created: dict[str, float] = {}
        answered: dict[str, float] = {}
        for kind in ("rest", "call"):
            response = await self._client.get(f"{self.base_url}/_sim/log", params={"kind": kind}, timeout=60.0)
            response.raise_for_status()
            for entry in response.json()["entries"]:
                call_id, data = entry["callId"], entry["data"]
                if call_id not in ids:
                    continue
                if kind == "rest" and data.get("method") == "POST" and data.get("status") == 201:
                    created.setdefault(call_id, entry["at"])
                elif kind == "call" and data.get("status") == "in-progress":
                    answered.setdefault(call_id, entry["at"])
        return {call_id: (at, answered.get(call_id)) for call_id, at in created.items()}

    async def answered_say_latencies(
        self, ids: set[str], keep: Path | None = None
    ) -> tuple[dict[str, float], list[float]]:
        """Per call: the simulator's ``status-update`` (in-progress) webhook leaving it (``sentAt``) to
        the first ``say`` arriving on the call's control URL, both on the simulator's clock; and when
        each call was answered (for the spread of the burst)."""
        sent: dict[str, float] = {}
        said: dict[str, float] = {}
        answered: list[float] = []
        for kind in ("webhook", "control", "call"):
            response = await self._client.get(f"{self.base_url}/_sim/log", params={"kind": kind}, timeout=120.0)
            response.raise_for_status()
            if keep is not None:
                (keep / f"simulator-{kind}.json").write_bytes(response.content)
            for entry in response.json()["entries"]:
                call_id, data = entry["callId"], entry["data"]
                if call_id not in ids:
                    continue
                if kind == "webhook" and data.get("type") == "status-update":
                    if data["body"]["message"].get("status") == "in-progress":
                        sent.setdefault(call_id, float(data["sentAt"]))
                elif kind == "control" and (data.get("message") or {}).get("type") == "say":
                    said.setdefault(call_id, float(entry["at"]))
                elif kind == "call" and data.get("status") == "in-progress":
                    answered.append(float(entry["at"]))
        return {c: said[c] - sent[c] for c in sent if c in said}, answered

    async def ended_at(self, ids: set[str]) -> dict[str, float]:
        """When each call ended (wall clock), from the simulator's log."""
        response = await self._client.get(f"{self.base_url}/_sim/log", params={"kind": "call"}, timeout=60.0)
        response.raise_for_status()
        return {
            entry["callId"]: entry["at"]
            for entry in response.json()["entries"]
            if entry["callId"] in ids and entry["data"].get("status") == "ended"
        }


# -- one phase -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class Window:
    """CPU and memory of the measured process (and the simulator, and the machine) over a phase."""

    child: Child
    simulator: Child
    before: Usage | None = None
    after: Usage | None = None
    sim_before: float = 0.0
    sim_after: float = 0.0
    machine_before: tuple[int, int] = (0, 0)
    machine_after: tuple[int, int] = (0, 0)
    started: float = 0.0
    ended: float = 0.0

    def open(self) -> None:
        self.started = time.monotonic()
        self.before = self.child.usage()
        self.sim_before = self.simulator.usage().cpu_seconds
        self.machine_before = machine_ticks()

    def close(self) -> None:
        self.ended = time.monotonic()
        self.after = self.child.usage()
        self.sim_after = self.simulator.usage().cpu_seconds
        self.machine_after = machine_ticks()

    def fill(self, result: PhaseResult, *, baseline_rss: int) -> None:
        assert self.before is not None
        assert self.after is not None
        result.cpu_seconds = self.after.cpu_seconds - self.before.cpu_seconds
        result.cpu_by_process = [
            cpu - self.before.cpu_by_pid.get(pid, 0.0) for pid, cpu in sorted(self.after.cpu_by_pid.items())
        ]
        result.window_seconds = self.ended - self.started
        result.mean_cores = result.cpu_seconds / result.window_seconds if result.window_seconds else 0.0
        result.baseline_rss_bytes = baseline_rss
        result.peak_rss_bytes = self.after.peak_rss_bytes
        result.rss_per_session_bytes = max(0, self.after.peak_rss_bytes - baseline_rss) / max(1, result.calls)
        result.simulator_cpu_seconds = self.sim_after - self.sim_before
        busy = self.machine_after[0] - self.machine_before[0]
        total = self.machine_after[1] - self.machine_before[1]
        result.machine_busy = busy / total if total else 0.0


def account(
    result: PhaseResult,
    sim_calls: dict[str, dict[str, Any]],
    stored: dict[str, tuple[int, str | None, bool]],
    stored_at: dict[str, float],
    ended_at: dict[str, float],
    connect_times: dict[str, tuple[float, float | None]],
) -> None:
    """Lost bytes, checksums and lag: ``stored`` maps call id → (bytes, sha256, complete)."""
    for call_id, call in sim_calls.items():
        expected = int(call.get("endFrame") or 0) * FRAME_BYTES
        records = call["listen"]
        sent = sum(int(r["audioBytes"]) for r in records)
        size, sha, complete = stored.get(call_id, (0, None, False))
        result.expected_bytes += expected
        result.sent_bytes += sent
        result.stored_bytes += size
        result.lost_bytes += max(0, expected - size)
        result.extra_bytes += max(0, size - expected)
        result.late_start_frames += sum(int(r["firstFrameIndex"] or 0) for r in records)
        result.calls_not_completed += not complete
        if len(records) == 1 and int(records[0]["audioBytes"]) == expected and sha is not None:
            result.sha256_checked += 1
            result.sha256_mismatches += sha != records[0]["sha256"]
    result.audio_seconds = result.expected_bytes / BYTES_PER_SECOND
    minutes = result.audio_seconds / 60
    result.cpu_per_call_minute = result.cpu_seconds / minutes if minutes else 0.0
    # Concurrent calls one core sustains: call-seconds recorded per CPU-second spent.
    result.calls_per_core = result.audio_seconds / result.cpu_seconds if result.cpu_seconds else 0.0
    lags = [stored_at[c] - ended_at[c] for c in sim_calls if c in stored_at and c in ended_at]
    result.max_lag_seconds = max(lags) if lags else None
    after_create: list[float] = []
    after_answer: list[float] = []
    for call_id, (created, answered) in connect_times.items():
        records = sim_calls.get(call_id, {}).get("listen") or []
        if not records:
            continue
        opened = float(records[0]["openedAt"])
        after_create.append(opened - created)
        if answered is not None:
            after_answer.append(opened - answered)
    if after_create:
        after_create.sort()
        result.connect_after_create = {
            "p50": after_create[len(after_create) // 2],
            "p90": after_create[int(len(after_create) * 0.9)],
            "max": after_create[-1],
        }
    result.late_connections = sum(1 for delay in after_answer if delay > 0)
    result.max_connect_after_answer = max(after_answer) if after_answer else None
    if missing := len(sim_calls) - len(lags):
        result.notes.append(f"{missing} calls without an end time or a stored time")
    if unheard := sum(1 for call in sim_calls.values() if not call["listen"]):
        result.notes.append(f"{unheard} calls never got a listen connection")
    if result.extra_bytes:
        result.notes.append(f"{result.extra_bytes} bytes stored beyond the calls' audio")
    if result.late_start_frames:
        result.notes.append(f"listen connections started {result.late_start_frames} frames late in all")
    if result.connect_after_create:
        c = result.connect_after_create
        late = result.max_connect_after_answer
        result.notes.append(
            f"first listen connection after the call's creation: p50 {c['p50']:.2f} s, p90 {c['p90']:.2f} s, "
            f"max {c['max']:.2f} s; {result.late_connections} after the audio started"
            + (f" (up to {late:.2f} s)" if late is not None and late > 0 else "")
        )


async def account_burst(result: PhaseResult, sim: Simulator, ids: set[str], keep: Path | None) -> None:
    """The answered say's latency (percentiles over the calls) and how spread the answers were; with
    ``keep``, the simulator's log of webhooks, control messages and call statuses is saved there."""
    latencies, answered = await sim.answered_say_latencies(ids, keep)
    if answered:
        result.answer_spread_seconds = max(answered) - min(answered)
    if missing := len(ids) - len(latencies):
        result.notes.append(f"{missing} calls without an answered webhook followed by a say")
    if not latencies:
        return
    ordered = sorted(latencies.values())

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    result.answered_say = {"p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": ordered[-1], "count": len(ordered)}


async def place_calls(
    n: int,
    ramp_rate: float,
    place: Callable[[int], Awaitable[T]],
    label: str,
    concurrency: int = PLACE_CONCURRENCY,
) -> list[T]:
    """Place ``n`` calls, at most ``ramp_rate`` starts per second (0: all at once) and ``concurrency``
    in flight."""
    t0 = time.monotonic()
    done = 0

    async def one(i: int) -> T:
        nonlocal done
        if ramp_rate > 0:
            await asyncio.sleep(max(0.0, t0 + i / ramp_rate - time.monotonic()))
        value = await place(i)
        done += 1
        if done % 50 == 0 or done == n:
            progress(f"{label}: placed {done}/{n} calls")
        return value

    return await gather_limited(concurrency, (functools.partial(one, i) for i in range(n)))


async def wait_calls_ended(sim: Simulator, ids: set[str], label: str, deadline: float) -> dict[str, dict[str, Any]]:
    """Poll the simulator until every call ended and its listen sockets closed."""
    last_report = 0.0
    while True:
        calls = await sim.calls(ids)
        ended = sum(1 for c in calls.values() if c["status"] == "ended")
        open_sockets = sum(int(c["listeners"]) for c in calls.values())
        if ended == len(ids) and open_sockets == 0:
            return calls
        now = time.monotonic()
        if now - last_report >= 10:
            progress(f"{label}: {ended}/{len(ids)} calls ended, {open_sockets} listen sockets open")
            last_report = now
        if now > deadline:
            raise BenchError(f"{label}: calls still running at the deadline ({ended}/{len(ids)} ended)")
        await asyncio.sleep(POLL_SECONDS)


async def run_switchboard(
    args: argparse.Namespace,
    procs: ProcessGroup,
    sim: Simulator,
    client: httpx.AsyncClient,
    tmp: Path,
    workers: int = 1,
) -> PhaseResult:
    label = "switchboard" if workers == 1 else f"switchboard x{workers}"
    async with serve_database(args.database, tmp) as database_url:
        return await _run_switchboard(args, procs, sim, client, tmp, workers, label, database_url)


@contextlib.asynccontextmanager
async def serve_database(server: str | None, tmp: Path) -> AsyncIterator[str]:
    """A new SQLite file, or a new database on the PostgreSQL server ``server`` (dropped afterwards)."""
    if server is None:
        yield f"sqlite+aiosqlite:///{tmp}/bench-{secrets.token_hex(4)}.db"
        return
    import asyncpg

    name = f"switchboard_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(server)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{server.rsplit('/', 1)[0].replace('postgresql://', 'postgresql+asyncpg://', 1)}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def settled(serve: Child, workers: int, timeout: float = 120.0) -> None:
    """Wait until ``serve --workers`` runs its workers and they have finished starting (the tree's CPU
    falls quiet): ``/healthz`` answers as soon as the first one is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = serve.usage()
        await asyncio.sleep(1.0)
        after = serve.usage()
        if len(after.cpu_by_pid) > workers and after.cpu_seconds - before.cpu_seconds < 0.2:
            return
    raise BenchError(f"serve did not start {workers} workers within {timeout:g} s:\n{serve.log_tail()}")


async def lease_holders(database_url: str) -> list[int]:
    """How many calls each replica holds a listen lease on (PostgreSQL), most first."""
    import asyncpg

    connection = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        rows = await connection.fetch(
            "SELECT count(*) AS n FROM call WHERE listen_owner IS NOT NULL GROUP BY listen_owner ORDER BY n DESC"
        )
    finally:
        await connection.close()
    return [int(row["n"]) for row in rows]


async def _run_switchboard(
    args: argparse.Namespace,
    procs: ProcessGroup,
    sim: Simulator,
    client: httpx.AsyncClient,
    tmp: Path,
    workers: int,
    label: str,
    database_url: str,
) -> PhaseResult:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    admin_key = secrets.token_hex(16)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")},
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_AUTO_MIGRATE": "1",
        **({"SWITCHBOARD_REDIS_URL": args.redis} if workers > 1 else {}),
        "SWITCHBOARD_STORAGE_URL": f"file://{tmp}/rec",
        "SWITCHBOARD_VAPI_BASE_URL": sim.base_url,
        "SWITCHBOARD_PUBLIC_URL": base,
        "SWITCHBOARD_WEBHOOK_SECRET": secrets.token_hex(16),
        "SWITCHBOARD_ADMIN_API_KEY": admin_key,
        "SWITCHBOARD_LOG_LEVEL": "warning",
        **dict(setting.split("=", 1) for setting in args.serve_env),
    }
    if args.burst:
        (tmp / "rules.yaml").write_text(BURST_RULES)
        env["SWITCHBOARD_RULES_FILE"] = str(tmp / "rules.yaml")
    progress(f"{label}: starting switchboard serve on {base}")
    argv = switchboard_argv("serve", "--port", str(port), "--workers", str(workers))
    serve = await procs.start(label.replace(" ", "-"), argv, env=env, cwd=tmp)
    await wait_http_ok(client, f"{base}/healthz", serve)
    if workers > 1:
        await settled(serve, workers)
    auth = {"Authorization": f"Bearer {admin_key}"}
    (await client.get(f"{base}/v1/calls", params={"limit": 1}, headers=auth)).raise_for_status()  # warm up
    await asyncio.sleep(1.0)
    result = PhaseResult(label, args.calls, args.seconds, workers=workers)
    window = Window(serve, sim.child)
    baseline_rss = serve.usage().rss_bytes

    refused: list[str] = []

    async def place(n: int) -> str | None:
        body = {
            "assistantId": "bench-assistant",
            "phoneNumberId": "bench-number",
            "customer": {"number": f"+1415555{n % 10000:04d}"},
            "metadata": {"bench": n},
        }
        response = await client.post(f"{base}/v1/calls", json=body, headers=auth, timeout=60.0)
        if response.status_code != 201:
            refused.append(f"{response.status_code} {response.text[:300]}")
            progress(f"{label}: POST /v1/calls answered {response.status_code}")
            return None
        return str(response.json()["id"])

    spy = await start_py_spy(args, procs, serve)
    trace = MemoryTrace(args.memory_trace, serve.pid) if args.memory_trace else None
    if trace is not None:
        trace.start()
    window.open()
    ramp, concurrency = (0.0, args.calls) if args.burst else (args.ramp_rate, PLACE_CONCURRENCY)
    ids = {call_id for call_id in await place_calls(args.calls, ramp, place, label, concurrency) if call_id}
    mid_rss = asyncio.create_task(rss_later(serve, args.seconds / 2))
    if trace is not None:
        trace.mark("placed")
    if refused:
        result.notes.append(f"{len(refused)} calls not placed (not counted below), first: {refused[0]}")
        result.calls = len(ids)
    deadline = time.monotonic() + args.seconds + 30 + args.drain_timeout
    if not database_url.startswith("sqlite"):
        held = await lease_holders(database_url)
        result.notes.append(f"calls leased per replica after placing: {held}")
    sim_calls = await wait_calls_ended(sim, ids, label, deadline)
    progress(f"{label}: every call ended; waiting for the recordings to be finalised")
    if trace is not None:
        trace.mark("ended")
    while True:
        usage_before_poll = serve.usage()
        moment = time.monotonic(), machine_ticks(), sim.child.usage().cpu_seconds
        finals = await list_recording_statuses(client, base, auth, ids)
        if len(finals) == len(ids):
            window.after, (window.ended, window.machine_after, window.sim_after) = usage_before_poll, moment
            break
        if time.monotonic() > deadline:
            result.finished = False
            result.notes.append(f"only {len(finals)}/{len(ids)} recordings finalised by the deadline")
            window.close()
            break
        await asyncio.sleep(POLL_SECONDS)
    window.fill(result, baseline_rss=baseline_rss)
    result.mid_rss_bytes = await mid_rss
    result.end_rss_bytes = serve.usage().rss_bytes
    if trace is not None:
        trace.mark("finalised")
        await trace.stop()
    if spy is not None:
        await stop_py_spy(procs, spy, args.py_spy)
    progress(f"{label}: reading {len(ids)} recordings")

    async def recording(call_id: str) -> tuple[str, dict[str, Any]]:
        response = await client.get(f"{base}/v1/calls/{call_id}/recording", headers=auth, timeout=60.0)
        return call_id, response.json() if response.status_code == 200 else {}

    recordings = dict(await gather_limited(PLACE_CONCURRENCY, (functools.partial(recording, c) for c in ids)))
    stored = {
        c: (int(r.get("bytes") or 0), r.get("sha256"), r.get("status") == "completed") for c, r in recordings.items()
    }
    stored_at = {c: parse_time(r["completedAt"]) for c, r in recordings.items() if r.get("completedAt")}
    statuses: dict[str, int] = {}
    for r in recordings.values():
        statuses[str(r.get("status"))] = statuses.get(str(r.get("status")), 0) + 1
    if set(statuses) != {"completed"}:
        result.notes.append(f"recording statuses: {statuses}")
    if gaps := sum(len(r.get("gaps") or []) for r in recordings.values()):
        result.notes.append(f"{gaps} gaps in the recordings")
    account(result, sim_calls, stored, stored_at, await sim.ended_at(ids), await sim.connect_times(ids))
    if args.burst:
        await account_burst(result, sim, ids, tmp if args.keep else None)
    result.exit_code = await procs.stop(serve)
    if result.exit_code not in (0, -signal.SIGTERM, None):  # uvicorn re-raises SIGTERM once shut down
        result.notes.append(f"serve exited with {result.exit_code}")
    if logged := [line for line in serve.log_tail(100_000).splitlines() if any(m in line for m in LOG_PROBLEMS)]:
        result.notes.append(f"serve logged {len(logged)} warnings or errors, first: {logged[0][:300]}")
    return result


async def start_py_spy(args: argparse.Namespace, procs: ProcessGroup, serve: Child) -> Child | None:
    """Sample ``serve`` with py-spy (raw collapsed stacks) over the measured window, if asked."""
    if args.py_spy is None:
        return None
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [exe, "record", "--pid", str(serve.pid), "--rate", "100", "--nonblocking", "--format", "raw"]
    argv += ["--output", str(args.py_spy.resolve())]
    if args.py_spy_seconds:
        argv += ["--duration", str(args.py_spy_seconds)]
    progress(f"switchboard: sampling serve with {' '.join(argv[1:])} (py-spy's own CPU competes for the cores)")
    spy = await procs.start("py-spy", argv, stop_signal=signal.SIGINT)  # it writes its output on Ctrl-C
    await asyncio.sleep(1.0)
    return spy


async def stop_py_spy(procs: ProcessGroup, spy: Child, path: Path) -> None:
    await procs.stop(spy)
    progress(f"switchboard: py-spy samples written to {path}")


async def list_recording_statuses(
    client: httpx.AsyncClient, base: str, auth: dict[str, str], ids: set[str]
) -> dict[str, str]:
    """Ids of our calls that ended with a final recording → its status (one listing, paged)."""
    finals: dict[str, str] = {}
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500, "status": "ended"}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(f"{base}/v1/calls", params=params, headers=auth, timeout=60.0)
        response.raise_for_status()
        page = response.json()
        for call in page["data"]:
            rec = call.get("recording")
            if call["id"] in ids and rec is not None and rec["status"] in FINAL_RECORDING:
                finals[call["id"]] = rec["status"]
        cursor = page.get("nextCursor")
        if not cursor:
            return finals


async def run_baseline(
    mode: str, args: argparse.Namespace, procs: ProcessGroup, sim: Simulator, tmp: Path
) -> PhaseResult:
    out = tmp / mode
    argv = [sys.executable, str(BENCH_DIR / "naive_listener.py"), "--mode", mode, "--out", str(out)]
    argv += ["--loop", args.loop]
    progress(f"{mode}: starting {BENCH_DIR.name}/naive_listener.py --mode {mode}")
    child = await procs.start(mode, argv, pipes=True, cwd=tmp)
    assert child.process.stdin is not None
    assert child.process.stdout is not None
    stdin, stdout = child.process.stdin, child.process.stdout
    async with asyncio.timeout(60):
        ready = await stdout.readline()
    if ready.strip() != b"ready":
        raise BenchError(f"{mode} listener did not start: {ready!r}\n{child.log_tail()}")
    await asyncio.sleep(1.0)
    result = PhaseResult(mode, args.calls, args.seconds)
    window = Window(child, sim.child)
    baseline_rss = child.usage().rss_bytes

    async def place(n: int) -> str:
        call_id, url = await sim.place_call(n)
        stdin.write(f"{call_id} {url}\n".encode())
        await stdin.drain()
        return call_id

    window.open()
    ids = set(await place_calls(args.calls, args.ramp_rate, place, mode))
    mid_rss = asyncio.create_task(rss_later(child, args.seconds / 2))
    stdin.write(b"end\n")
    await stdin.drain()
    deadline = time.monotonic() + args.seconds + 30 + args.drain_timeout
    done_line = asyncio.create_task(stdout.readline(), name=f"{mode}-done")
    last_report = time.monotonic()
    sim_calls: dict[str, dict[str, Any]] = {}
    try:
        while not done_line.done():
            await asyncio.wait([done_line], timeout=POLL_SECONDS)
            if done_line.done():
                break
            if time.monotonic() > deadline:
                raise TimeoutError
            if time.monotonic() - last_report >= 10:
                calls = await sim.calls(ids)
                ended = sum(1 for c in calls.values() if c["status"] == "ended")
                sockets = sum(int(c["listeners"]) for c in calls.values())
                progress(f"{mode}: {ended}/{len(ids)} calls ended, {sockets} listen sockets open")
                last_report = time.monotonic()
        window.close()
        line = done_line.result().decode()
        if not line.startswith("done "):
            raise BenchError(f"{mode} listener failed: {line[:300]!r}\n{child.log_tail()}")
        files: dict[str, dict[str, Any]] = json.loads(line[5:])
    except TimeoutError:
        window.close()
        done_line.cancel()
        result.finished = False
        result.notes.append(f"did not finish within {args.drain_timeout:g} s after the calls' end: stopped")
        files = {}
    window.fill(result, baseline_rss=baseline_rss)
    result.mid_rss_bytes = await mid_rss
    stdin.close()
    result.exit_code = await procs.stop(child)
    sim_calls = await wait_calls_ended(sim, ids, mode, time.monotonic() + 120)
    progress(f"{mode}: checking {len(files)} files")
    stored = await asyncio.to_thread(check_files, files)
    stored_at = {call_id: float(entry["finishedAt"]) for call_id, entry in files.items()}
    if errors := [e["error"] for e in files.values() if e["error"]]:
        result.notes.append(f"{len(errors)} connections failed, e.g. {errors[0]}")
    account(result, sim_calls, stored, stored_at, await sim.ended_at(ids), await sim.connect_times(ids))
    return result


# -- output --------------------------------------------------------------------------------------------


def render_table(results: list[PhaseResult]) -> str:
    floor = next((r for r in results if r.listener == "floor" and r.finished), None)
    headers = [
        "listener",
        "calls",
        "call s",
        "lost bytes",
        "sha256 ok/checked",
        "CPU s/call-min",
        "x floor",
        "mean cores",
        "peak RSS MiB",
        "RSS/session KiB",
        "max lag s",
    ]
    rows = []
    for r in results:
        ratio = f"{r.cpu_per_call_minute / floor.cpu_per_call_minute:.2f}" if floor else "-"
        rows.append(
            [
                r.listener + ("" if r.finished else " (DNF)"),
                str(r.calls),
                f"{r.call_seconds:g}",
                f"{r.lost_bytes:,}",
                f"{r.sha256_checked - r.sha256_mismatches}/{r.sha256_checked}",
                f"{r.cpu_per_call_minute:.3f}",
                ratio,
                f"{r.mean_cores:.2f}",
                f"{r.peak_rss_bytes / 2**20:.1f}",
                f"{r.rss_per_session_bytes / 1024:.1f}",
                "-" if r.max_lag_seconds is None else f"{r.max_lag_seconds:.1f}",
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    out = [line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in rows]
    for r in results:
        steady = r.cpu_per_call_minute * r.calls / 60
        out.append(
            f"{r.listener}: {r.cpu_seconds:.1f} CPU s over {r.window_seconds:.1f} s for {r.audio_seconds / 60:.1f} "
            f"call-minutes (≈{steady:.2f} cores at {r.calls} live calls); "
            f"simulator {r.simulator_cpu_seconds:.1f} CPU s "
            f"({r.simulator_cpu_seconds / r.window_seconds if r.window_seconds else 0:.2f} cores); machine "
            f"{r.machine_busy * 100:.0f} % busy; RSS {r.baseline_rss_bytes / 2**20:.1f} → "
            f"{r.peak_rss_bytes / 2**20:.1f} MiB"
        )
        out.append(
            f"  one core sustains ≈{r.calls_per_core:.0f} concurrent calls (call-seconds per CPU-second)"
            + (
                f"; CPU s per process {[round(cpu, 1) for cpu in r.cpu_by_process]}"
                if len(r.cpu_by_process) > 1
                else ""
            )
        )
        if r.answered_say:
            a = r.answered_say
            spread = r.answer_spread_seconds or 0.0
            out.append(
                f"  answered -> say (simulator clock, {a['count']:.0f} calls answered within {spread:.2f} s): "
                f"p50 {a['p50'] * 1000:.0f} ms, p90 {a['p90'] * 1000:.0f} ms, p99 {a['p99'] * 1000:.0f} ms, "
                f"max {a['max'] * 1000:.0f} ms"
            )
        if r.mid_rss_bytes and r.calls:
            per_call = (r.mid_rss_bytes - r.baseline_rss_bytes) / r.calls / 1024
            rss_note = f"RSS half-way through the calls {r.mid_rss_bytes / 2**20:.1f} MiB"
            rss_note += f" ({per_call:.1f} KiB per live session)"
            if r.end_rss_bytes:
                left = (r.end_rss_bytes - r.baseline_rss_bytes) / r.calls / 1024
                rss_note += (
                    f"; once every recording was final {r.end_rss_bytes / 2**20:.1f} MiB ({left:.1f} KiB per call)"
                )
            out.append(f"  {rss_note}")
        out += [f"  note: {note}" for note in r.notes]
    by_name = {r.listener: r for r in results}
    if (sb := by_name.get("switchboard")) and (naive := by_name.get("naive")) and sb.cpu_per_call_minute:
        out.append(
            f"naive / switchboard: CPU {naive.cpu_per_call_minute / sb.cpu_per_call_minute:.2f}x, "
            f"RSS per session {naive.rss_per_session_bytes / max(sb.rss_per_session_bytes, 1):.2f}x"
        )
    return "\n".join(out)


# -- main ----------------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> list[PhaseResult]:
    before = machine_ticks()
    await asyncio.sleep(1.0)
    after = machine_ticks()
    idle_busy = (after[0] - before[0]) / max(1, after[1] - before[1])
    progress(f"machine {idle_busy * 100:.0f} % busy before the benchmark (other work competes for the CPUs)")
    args.machine_busy_before = round(idle_busy, 3)
    tmp = Path(tempfile.mkdtemp(prefix="switchboard-bench-"))
    progress(f"temporary folder {tmp}")
    results: list[PhaseResult] = []
    try:
        async with (
            ProcessGroup(tmp) as procs,
            httpx.AsyncClient(
                limits=httpx.Limits(max_connections=max(50, args.calls + 10) if args.burst else 50)
            ) as client,
        ):
            port = free_port()
            sim_argv = switchboard_argv(
                "simulate", "--port", str(port), "--pace", "1", "--talk-seconds", f"{args.seconds:g}"
            )
            progress(f"starting the simulator: {' '.join(sim_argv[-7:])}")
            sim_child = await procs.start("simulator", sim_argv, cwd=tmp)
            sim = Simulator(sim_child, f"http://127.0.0.1:{port}", client)
            await wait_http_ok(client, f"{sim.base_url}/_sim/calls", sim_child)
            phases: list[str] = [f"switchboard:{n}" for n in args.workers]
            phases += [] if args.skip_floor or args.burst else ["floor"]
            phases += [] if args.skip_naive or args.burst else ["naive"]
            for phase in phases:
                if phase.startswith("switchboard:"):
                    result = await run_switchboard(args, procs, sim, client, tmp, int(phase.split(":")[1]))
                else:
                    result = await run_baseline(phase, args, procs, sim, tmp)
                results.append(result)
                progress(
                    f"{phase}: lost {result.lost_bytes:,} bytes, {result.cpu_per_call_minute:.3f} CPU s/call-minute, "
                    f"peak RSS {result.peak_rss_bytes / 2**20:.1f} MiB"
                )
                await asyncio.sleep(2.0)  # let the machine settle between phases
    finally:
        if args.keep:
            progress(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="concurrent calls per phase (default 200)")
    parser.add_argument("--seconds", type=float, default=20.0, help="audio seconds per call (default 20)")
    parser.add_argument(
        "--burst",
        action="store_true",
        help="place every call at once with a call.answered say rule loaded; measure answered -> say "
        "(Switchboard only, no baselines)",
    )
    parser.add_argument("--skip-naive", action="store_true", help="do not run the naive baseline")
    parser.add_argument("--skip-floor", action="store_true", help="do not run the bare-websockets floor")
    parser.add_argument("--json", type=Path, help="also write every figure to this JSON file")
    parser.add_argument("--ramp-rate", type=float, default=50.0, help="calls placed per second (default 50)")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=240.0,
        help="seconds a listener may take after the calls' end before it is stopped (default 240)",
    )
    parser.add_argument(
        "--loop",
        choices=["uvloop", "asyncio"],
        default="uvloop",
        help="event loop of the baselines (serve runs on uvloop, uvicorn's default when installed)",
    )
    parser.add_argument("--py-spy", type=Path, help="sample serve with py-spy over the window into this file (raw)")
    parser.add_argument(
        "--py-spy-seconds", type=int, help="sample only this many seconds from the first call placed (e.g. a burst)"
    )
    parser.add_argument(
        "--serve-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for serve, e.g. SWITCHBOARD_ANALYTICS_ENABLED=0 (repeatable)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        metavar="N",
        help="run switchboard serve --workers N, one phase per N given (default 1); N > 1 needs --database",
    )
    parser.add_argument(
        "--database",
        metavar="POSTGRES_DSN",
        help="a PostgreSQL server (postgresql://USER@HOST:PORT/DB to connect to) on which each switchboard phase "
        "gets a new database, dropped afterwards (default: a SQLite file)",
    )
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379/0",
        help="SWITCHBOARD_REDIS_URL of phases with more than one worker (default: %(default)s)",
    )
    parser.add_argument(
        "--memory-trace",
        type=Path,
        metavar="FILE",
        help="sample serve's RSS (and peak, anonymous / file-backed, threads, SQLite descriptors, sockets) every "
        "100 ms into this JSON-lines file, with marks when the calls are placed, ended and finalised",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs, database, audio)")
    args = parser.parse_args(argv)
    if max(args.workers) > 1 and args.database is None:
        parser.error("--workers above 1 needs --database (PostgreSQL): SQLite serves one process")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    source = git_describe()  # what serve runs: the working tree at start-up

    async def guarded() -> list[PhaseResult]:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        return await run(args)

    try:
        results = asyncio.run(guarded())
    except KeyboardInterrupt:
        progress("interrupted; every process stopped")
        return 130
    except asyncio.CancelledError:
        progress("terminated; every process stopped")
        return 143
    except BenchError as exc:
        progress(f"benchmark failed: {exc}")
        return 1
    print(render_table(results))
    if args.json:
        document = {
            "startedAt": started_at,
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "kernel": platform.release()},
            "git": source,
            "results": [asdict(r) for r in results],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        progress(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
