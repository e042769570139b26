"""What each live listen session holds: tracemalloc over N simulated calls recorded in this process.

    python bench/session_memory.py --calls 30 --seconds 90 --depth 6 [--top 25] [--after-end 10]

The Vapi simulator runs in its own process (real time); Switchboard (SQLite + local files in a temporary
folder) runs in this one, with tracemalloc on. Five calls warm everything up first (modules, compiled
statements, pools). Then N calls are placed; once every session has recorded a few seconds, a snapshot
is compared with the one taken before, and the allocations still alive are printed per session,
grouped by the line that made them (the innermost frame in ``service/``), largest first. RSS growth per
call is printed too (it includes the allocator's own overhead and fragmentation, and tracemalloc's own
memory: read it as an upper bound, the traced bytes are the load-independent figure). ``--after-end``
then waits for every call to end and prints what the ended calls left behind, the same way.

tracemalloc slows this process several times over (more with a deeper ``--depth``): on a busy 2-core
machine keep N small and the calls long enough to still be live when every session has started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import linecache
import os
import secrets
import shutil
import socket
import sys
import tempfile
import tracemalloc
from collections import Counter
from pathlib import Path

import httpx
import uvicorn

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _procs import ProcessGroup, free_port, switchboard_argv, wait_http_ok  # noqa: E402

from service.app import create_app  # noqa: E402
from service.logging import configure_logging  # noqa: E402
from service.settings import Settings  # noqa: E402


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def ours(trace: tracemalloc.Traceback) -> str:
    """The innermost frame of the traceback that is Switchboard's own code (else the innermost)."""
    for frame in reversed(trace):
        if "/service/" in frame.filename and "/simulator/" not in frame.filename:
            line = linecache.getline(frame.filename, frame.lineno).strip()
            return f"{frame.filename.split('/service/', 1)[1]}:{frame.lineno}  {line[:70]}"
    frame = trace[-1]
    return f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno}"


def report(title: str, before: tracemalloc.Snapshot, after: tracemalloc.Snapshot, n: int, rss: int, top: int) -> None:
    """What ``after`` holds beyond ``before``, per call, by allocation site (positive differences only)."""
    sizes: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    for stat in after.compare_to(before, "traceback"):
        if stat.size_diff > 0:
            sizes[ours(stat.traceback)] += stat.size_diff
            counts[ours(stat.traceback)] += max(stat.count_diff, 0)
    total = sum(sizes.values())
    print(f"{title}: {total / n / 1024:.1f} KiB traced per call, RSS {rss / n / 1024:.1f} KiB per call")
    for where, size in sizes.most_common(top):
        print(f"{size / n:9.0f} B  {counts[where] / n:6.1f} blocks  {where}")
    sys.stdout.flush()


async def main(args: argparse.Namespace) -> None:
    configure_logging("warning")
    tmp = Path(tempfile.mkdtemp(prefix="switchboard-memory-"))
    secret, admin = secrets.token_hex(8), secrets.token_hex(8)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sim_port = free_port()
    # tracemalloc slows this process several times over: connections kept alive for less than the
    # servers' 5 s keep-alive, or a request sent on one the server is closing fails (ReadError).
    limits = httpx.Limits(keepalive_expiry=1.0)
    async with (
        ProcessGroup(tmp) as procs,
        httpx.AsyncClient(timeout=60, limits=limits) as client,
        httpx.AsyncClient(limits=httpx.Limits(max_connections=200, keepalive_expiry=1.0)) as vapi_http,
    ):
        sim_argv = switchboard_argv("simulate", "--port", str(sim_port), "--talk-seconds", str(args.seconds))
        sim_argv += ["--server-url", f"{base}/webhooks/vapi", "--secret", secret]
        sim = await procs.start("simulate", sim_argv, env=dict(os.environ))
        await wait_http_ok(client, f"http://127.0.0.1:{sim_port}/_sim/calls", sim)
        settings = Settings(
            _env_file=None,
            database_url=f"sqlite+aiosqlite:///{tmp}/memory.db",
            storage_url=f"file://{tmp}/rec",
            vapi_base_url=f"http://127.0.0.1:{sim_port}",
            public_url=base,
            webhook_secret=secret,
            admin_api_key=admin,
            log_level="warning",
            auto_migrate=True,
        )
        from service.db.migrate import upgrade

        upgrade(settings.database_url)
        app = create_app(settings, http_client=vapi_http)
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False, ws="websockets-sansio"))
        serving = asyncio.create_task(server.serve(sockets=[sock]))
        await wait_http_ok(client, f"{base}/healthz", sim)
        auth = {"Authorization": f"Bearer {admin}"}

        async def active_sessions() -> float:
            text = (await client.get(f"{base}/metrics")).text
            lines = [line for line in text.splitlines() if line.startswith("switchboard_listen_sessions_active ")]
            return float(lines[0].split()[1]) if lines else 0.0

        placing = asyncio.Semaphore(10)
        placed = 0

        async def place(n: int) -> None:
            nonlocal placed
            body = {"assistantId": "a", "phoneNumberId": "p", "customer": {"number": f"+1415555{n:04d}"}}
            async with placing:
                headers = {**auth, "Idempotency-Key": f"memory-{n}"}  # a retry places the call once
                for attempt in range(3):
                    try:
                        response = await client.post(f"{base}/v1/calls", json=body, headers=headers)
                        break
                    except httpx.TransportError:
                        if attempt == 2:
                            raise
            if response.status_code != 201:
                print(f"placing call {n} failed: {response.status_code} {response.text[:200]}")
            placed += response.status_code == 201

        async def settle(count: int) -> None:
            async with asyncio.timeout(300):
                while await active_sessions() < count:  # noqa: ASYNC110 - another process's state
                    await asyncio.sleep(0.2)
            await asyncio.sleep(args.record_seconds)

        await asyncio.gather(*(place(n) for n in range(5)))
        await settle(placed)
        tracemalloc.start(args.depth)
        before, rss_before = tracemalloc.take_snapshot(), rss_bytes()
        warm = placed
        await asyncio.gather(*(place(100 + n) for n in range(args.calls)))
        sessions = placed - warm
        await settle(placed)
        after, rss_after = tracemalloc.take_snapshot(), rss_bytes()
        report(f"{sessions} live sessions", before, after, sessions, rss_after - rss_before, args.top)
        if args.after_end:
            # Every call ends; what is still allocated then, per call, is what calls leave behind
            # (caches or maps keyed by call id, metric children, finished task records, ...).
            async with asyncio.timeout(args.seconds + 300):
                while await active_sessions() > 0:  # noqa: ASYNC110 - another process's state
                    await asyncio.sleep(0.5)
            await asyncio.sleep(args.after_end)  # the work that follows a call's end
            ended, rss_ended = tracemalloc.take_snapshot(), rss_bytes()
            report(f"{sessions} calls ended", before, ended, sessions, rss_ended - rss_before, args.top)
            # What only the cyclic garbage collector frees stays in RSS until a full collection runs.
            left = sum(1 for o in gc.get_objects() if type(o).__name__ in ("ListenSession", "RecordingWriter"))
            print(f"sessions and writers still in memory: {left}; gc.collect() freed {gc.collect()} objects")
            collected, rss_collected = tracemalloc.take_snapshot(), rss_bytes()
            report(
                f"{sessions} calls ended, after gc", before, collected, sessions, rss_collected - rss_before, args.top
            )
        tracemalloc.stop()
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await serving
    if args.keep:
        print(f"kept {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=30.0, help="talk time of each simulated call")
    parser.add_argument("--record-seconds", type=float, default=4.0, help="recording before the snapshot")
    parser.add_argument("--depth", type=int, default=12, help="traceback depth kept by tracemalloc")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument(
        "--after-end",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also wait for every call to end, then SECONDS more, and print what the ended calls left behind",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (simulator.log, database)")
    asyncio.run(main(parser.parse_args()))
