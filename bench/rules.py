"""Rules benchmark: latency from a webhook reaching Switchboard to the rule's control POST leaving it.

    python bench/rules.py [--calls 200] [--rules 20] [--seconds 20] [--rate 50] [--json out.json]

``switchboard serve`` runs in its own process (SQLite in a temporary folder) with a rules file of
``--rules`` transcript rules: one matches every utterance (``once: false``, so each utterance fires),
the others are realistic conditions that do not match (regexes, ``contains``, metadata checks), so every
webhook pays for evaluating all of them. This process plays Vapi: it makes ``--calls`` calls live
(``status-update: in-progress`` whose ``monitor.controlUrl`` points at a control receiver served here),
then sends final ``transcript`` webhooks at ``--rate`` per second spread over the calls.

Latency per firing = arrival of the control POST at the receiver - the moment the webhook POST was
sent, both on this process's monotonic clock. It includes both loopback hops (tens of µs each here),
so it is an upper bound of "webhook receipt → control POST leaving Switchboard". Switchboard's own
histogram (``switchboard_rule_fire_seconds``: committed event → control POST answered) is printed too.

The CEL evaluation cost per rule is measured in this process: each condition evaluated against a
prepared context (what the engine does), plus the per-occurrence context build. When ``cel-python`` is
installed (``pip install cel-python``), the same conditions are timed with it for comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _procs import ProcessGroup, free_port

from service.rules.conditions import compile_condition, make_context
from service.simulator import LoopbackServer

CUSTOMER = {"number": "+14155550123", "name": "Ada"}
METADATA = {"region": "NY", "crmId": "crm-7", "tier": "gold", "vip": False}
UTTERANCE = re.compile(r"u\d{6}")
ADMIN_KEY = "bench-admin-key"
SECRET = "bench-webhook-secret"  # noqa: S105 - a throwaway local secret
MATCHING = {"name": "cancel-offer", "on": "transcript", "once": False,
            "if": 'event.role == "user" && event.transcript.matches("(?i)\\\\bcancel")',
            "say": "Before you go, {{ call.customer.name }}: {{ event.transcript }}"}  # fmt: skip
NON_MATCHING = [
    'event.role == "user" && event.transcript.matches("(?i)\\\\b(refund|chargeback)\\\\b")',
    'event.transcript.contains("supervisor")',
    'call.metadata.region == "CA" && event.role == "assistant"',
    'event.role == "user" && size(event.transcript) > 400',
    'call.metadata.tier == "platinum"',
    'event.transcript.startsWith("Hello operator")',
    "has(call.metadata.vip) && call.metadata.vip == true",
    'event.role == "user" && event.transcript.endsWith("??")',
]


def rules_yaml(count: int) -> str:
    rules = [MATCHING]
    for n in range(count - 1):
        rules.append({"name": f"quiet-{n:02d}", "on": "transcript", "if": NON_MATCHING[n % len(NON_MATCHING)],
                      "say": f"Rule {n} says hello."})  # fmt: skip
    return json.dumps({"rules": rules}, indent=1)  # JSON is YAML 1.2


class ControlReceiver:
    """The calls' controlUrl: notes when each POST arrives, keyed by the utterance id the say repeats."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.count = 0

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        arrived = time.perf_counter()
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.count += 1
        if match := UTTERANCE.search(body.decode("utf-8", "replace")):
            self.arrivals.setdefault(match[0], arrived)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"ok":true}'})


def webhook(call_id: str, control_url: str, kind: str, **fields: Any) -> dict[str, Any]:
    call = {"id": call_id, "status": "in-progress", "type": "outboundPhoneCall", "customer": CUSTOMER,
            "metadata": METADATA, "monitor": {"controlUrl": control_url}}  # fmt: skip
    return {"message": {"type": kind, "timestamp": int(time.time() * 1000), "call": call, **fields}}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextlib.asynccontextmanager
async def database(args: argparse.Namespace, folder: Path) -> AsyncIterator[str]:
    """SQLite in the temporary folder, or a throwaway PostgreSQL database (``--postgres DSN``)."""
    if not args.postgres:
        yield f"sqlite+aiosqlite:///{folder / 'switchboard.db'}"
        return
    import asyncpg  # type: ignore[import-untyped]

    name = f"switchboard_bench_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(args.postgres)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        base = args.postgres.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
        yield f"{base}/{name}"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def run_latency(args: argparse.Namespace) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="switchboard-bench-rules-"))
    async with database(args, folder) as url:
        return await measure_latency(args, folder, url)


async def measure_latency(args: argparse.Namespace, folder: Path, url: str) -> dict[str, Any]:
    rules_file = folder / "rules.yaml"
    rules_file.write_text(rules_yaml(args.rules))
    port = free_port()
    env = {
        "PATH": "/usr/bin:/bin",
        "SWITCHBOARD_DATABASE_URL": url,
        "SWITCHBOARD_AUTO_MIGRATE": "1",
        "SWITCHBOARD_STORAGE_URL": f"file://{folder / 'recordings'}",
        "SWITCHBOARD_RULES_FILE": str(rules_file),
        "SWITCHBOARD_ADMIN_API_KEY": ADMIN_KEY,
        "SWITCHBOARD_WEBHOOK_SECRET": SECRET,
        "SWITCHBOARD_LOG_LEVEL": "warning",
        # This process plays Vapi on loopback: its control URLs are private addresses.
        "SWITCHBOARD_WEBHOOK_ALLOW_PRIVATE": "1",
        **{name: os.environ[name] for name in ("PYTHONPATH",) if name in os.environ},  # e.g. an older checkout
    }
    receiver = ControlReceiver()
    script = Path(sys.executable).parent / "switchboard"
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]
    async with (
        ProcessGroup(folder) as procs,
        LoopbackServer(receiver) as control,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=httpx.Limits(max_connections=64)) as client,
    ):
        serve = await procs.start("serve", [*argv, "serve", "--port", str(port)], env=env)
        if args.py_spy:
            spy = ["py-spy", "record", "-o", args.py_spy, "-f", "raw", "--idle", "--pid", str(serve.pid)]
            await procs.start("py-spy", [*spy, "-d", str(int(args.seconds) + 3)])
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get("/healthz")).status_code == 200:
                    break
            if time.monotonic() > deadline or not serve.alive():
                raise SystemExit(f"switchboard did not start:\n{serve.log_tail()}")
            await asyncio.sleep(0.2)
        headers = {"X-Vapi-Secret": SECRET}
        calls = [f"bench-call-{n:04d}" for n in range(args.calls)]
        for call_id in calls:  # make every call live
            body = webhook(call_id, f"{control.base_url}/c/{call_id}", "status-update", status="in-progress")
            response = await client.post("/webhooks/vapi", json=body, headers=headers)
            response.raise_for_status()
        print(f"{args.calls} calls live, {args.rules} rules; sending {args.rate}/s for {args.seconds:g} s",
              file=sys.stderr)  # fmt: skip
        await asyncio.sleep(1.0)
        receiver.arrivals.clear()
        sent: dict[str, float] = {}
        rng = random.Random(7)
        in_flight: set[asyncio.Task[None]] = set()

        async def send(utterance: str, call_id: str) -> None:
            text = f"I want to cancel my plan, reference {utterance}."
            body = webhook(call_id, f"{control.base_url}/c/{call_id}", "transcript",
                           role="user", transcriptType="final", transcript=text)  # fmt: skip
            sent[utterance] = time.perf_counter()
            (await client.post("/webhooks/vapi", json=body, headers=headers)).raise_for_status()

        total = int(args.rate * args.seconds)
        started = time.perf_counter()
        for n in range(total):
            await asyncio.sleep(max(0.0, started + n / args.rate - time.perf_counter()))
            task = asyncio.create_task(send(f"u{n:06d}", rng.choice(calls)))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        await asyncio.gather(*in_flight)
        async with asyncio.timeout(30):
            while len(receiver.arrivals) < total:  # noqa: ASYNC110 - the receiver is plain ASGI, no event
                await asyncio.sleep(0.05)
        metrics = (await client.get("/metrics")).text
    latencies = [receiver.arrivals[u] - sent[u] for u in sent if u in receiver.arrivals]
    histogram = {
        line.split("{")[0].split(" ")[0]: line.rsplit(" ", 1)[1]
        for line in metrics.splitlines()
        if line.startswith(("switchboard_rule_fire_seconds_sum", "switchboard_rule_fire_seconds_count"))
    }
    fire_mean = float(histogram.get("switchboard_rule_fire_seconds_sum", 0)) / max(
        1.0, float(histogram.get("switchboard_rule_fire_seconds_count", 1))
    )
    return {
        "database": "postgresql" if args.postgres else "sqlite",
        "rate_per_second": args.rate,
        "calls": args.calls,
        "rules": args.rules,
        "webhooks": total,
        "firings": len(latencies),
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p90_ms": percentile(latencies, 0.90) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "max_ms": max(latencies) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "engine_mean_ms": fire_mean * 1000,
    }


def time_per_call(function: Any, repeat: int) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - start) / repeat


def cel_costs(repeat: int) -> dict[str, Any]:
    call = {"id": "c1", "status": "in-progress", "customer": CUSTOMER, "metadata": METADATA, "startedAt": None}
    event = {"type": "transcript", "role": "user", "transcript": "I want to cancel my plan.", "source": "vapi"}
    sources = [MATCHING["if"], *NON_MATCHING]
    context = make_context(call, event)
    rust = {}
    for source in sources:
        condition = compile_condition(source)
        rust[source] = time_per_call(lambda c=condition: c.evaluate(context), repeat)
    result: dict[str, Any] = {
        "context_build_us": time_per_call(lambda: make_context(call, event), repeat) * 1e6,
        "common_expression_language_us": {source: cost * 1e6 for source, cost in rust.items()},
        "compile_us": time_per_call(lambda: compile_condition(MATCHING["if"]), max(1, repeat // 10)) * 1e6,
    }
    try:
        import celpy  # type: ignore[import-not-found]
    except ImportError:
        return result
    environment = celpy.Environment()
    activation = {"call": celpy.json_to_cel(call), "event": celpy.json_to_cel(event)}
    slow = {}
    for source in sources:
        program = environment.program(environment.compile(source))
        slow[source] = time_per_call(lambda p=program: p.evaluate(activation), max(1, repeat // 20)) * 1e6
    result["cel_python_us"] = slow
    result["cel_python_compile_us"] = (
        time_per_call(lambda: environment.program(environment.compile(MATCHING["if"])), max(1, repeat // 100)) * 1e6
    )
    return result


def render(latency: dict[str, Any] | None, costs: dict[str, Any]) -> str:
    lines = []
    if latency:
        lines += [
            f"webhook -> control POST ({latency['database']}), {latency['calls']} live calls, "
            f"{latency['rules']} rules, {latency['rate_per_second']:g} webhooks/s, {latency['webhooks']} webhooks, "
            f"{latency['firings']} firings:",
            f"  p50 {latency['p50_ms']:.2f} ms   p90 {latency['p90_ms']:.2f} ms   p99 {latency['p99_ms']:.2f} ms   "
            f"max {latency['max_ms']:.2f} ms   mean {latency['mean_ms']:.2f} ms",
            f"  engine histogram mean (committed event -> control POST answered): {latency['engine_mean_ms']:.2f} ms",
            "",
        ]
    rust = costs["common_expression_language_us"]
    slow = costs.get("cel_python_us", {})
    lines.append(f"CEL per rule (µs; context build once per occurrence: {costs['context_build_us']:.1f} µs; "
                 f"compile {costs['compile_us']:.1f} µs)")  # fmt: skip
    if "cel_python_compile_us" in costs:
        lines.append(f"  (cel-python compile {costs['cel_python_compile_us']:.1f} µs)")
    lines.append(f"  {'condition':70} {'cel (rust)':>10} {'cel-python':>11}")
    for source, cost in rust.items():
        other = f"{slow[source]:11.1f}" if source in slow else f"{'-':>11}"
        lines.append(f"  {source[:70]:70} {cost:10.2f} {other}")
    lines.append(f"  {'mean':70} {statistics.fmean(rust.values()):10.2f} "
                 + (f"{statistics.fmean(slow.values()):11.1f}" if slow else f"{'-':>11}"))  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rules", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rate", type=float, default=50.0, help="transcript webhooks per second")
    parser.add_argument("--repeat", type=int, default=20_000, help="evaluations per condition for the CEL figures")
    parser.add_argument("--skip-latency", action="store_true")
    parser.add_argument("--postgres", metavar="DSN", help="use a throwaway database on this PostgreSQL server "
                        "(e.g. postgresql://postgres@127.0.0.1:5432/postgres) instead of SQLite")  # fmt: skip
    parser.add_argument("--py-spy", help="profile the server with py-spy into this file (raw collapsed stacks)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    latency = None if args.skip_latency else asyncio.run(run_latency(args))
    costs = cel_costs(args.repeat)
    print(render(latency, costs))
    if args.json:
        Path(args.json).write_text(json.dumps({"latency": latency, "cel": costs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
