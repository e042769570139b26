"""Load generator for ``bench/api.py``: POSTs Vapi server messages to ``/webhooks/vapi`` (own process).

    python bench/_api_load.py --url http://127.0.0.1:PORT --secret S --messages 10000 --calls 200 --concurrency 48

Every body is built and serialised before the clock starts, so that the timed loop only sends. Messages go
round-robin over the calls (message k of every call, then message k+1), so that one call's messages arrive
in order and rarely overlap, as they do from Vapi. Each message has a unique ``timestamp`` (ms), hence a
unique body: none is a duplicate delivery. Progress lines and the final result are JSON lines on stdout
(``{"progress": ...}`` then ``{"result": ...}``); the parent relays them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

ASSISTANTS = [f"asst-{i:02d}-{uuid.UUID(int=i).hex[:8]}" for i in range(20)]
USER_LINES = [
    "Hi, I'm calling about my order from last week.",
    "Yes, the number is four two seven nine.",
    "Could you move the delivery to Thursday afternoon?",
    "That works, thank you.",
    "Actually, can you also update my email address?",
    "No, that's everything. Thanks for your help.",
]
ASSISTANT_LINES = [
    "Hello! Thanks for calling Acme support, how can I help you today?",
    "Sure, can I have your order number please?",
    "Thank you. I can see the order; it is scheduled for Tuesday.",
    "Done, it will now arrive on Thursday between noon and five.",
    "Of course, what is the new address?",
    "You're welcome, have a great day!",
]


def emit(kind: str, value: Any) -> None:
    print(json.dumps({kind: value}), flush=True)


@dataclass(slots=True)
class SimCall:
    """One call's identity and conversation so far, to build its messages."""

    id: str
    index: int
    assistant_id: str
    number: str
    created_at: str
    status: str = "queued"
    turns: list[dict[str, Any]] = field(default_factory=list)

    def call_object(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "orgId": "5f6f1a8e-0c57-4a9c-9f43-bench00000000",
            "createdAt": self.created_at,
            "updatedAt": self.created_at,
            "type": "outboundPhoneCall",
            "status": self.status,
            "assistantId": self.assistant_id,
            "phoneNumberId": "pn-bench-0001",
            "customer": {"number": self.number, "name": f"Customer {self.index}"},
            "phoneCallProvider": "twilio",
            "phoneCallProviderId": f"CA{uuid.uuid5(uuid.NAMESPACE_URL, self.id).hex}",
            "phoneCallTransport": "pstn",
            "assistantOverrides": {"metadata": {"crmId": f"crm-{self.index:06d}", "campaign": "bench"}},
        }


def call_script(length: int) -> list[tuple[str, dict[str, Any]]]:
    """The (type, extra fields) of a call's ``length`` messages: ringing, answered, turns, ended."""
    script: list[tuple[str, dict[str, Any]]] = [
        ("status-update", {"status": "ringing"}),
        ("status-update", {"status": "in-progress"}),
    ]
    turn = 0
    while len(script) < length - 1:
        role = "assistant" if turn % 2 == 0 else "user"
        line = (ASSISTANT_LINES if role == "assistant" else USER_LINES)[(turn // 2) % 6]
        script += [
            ("speech-update", {"status": "started", "role": role, "turn": turn}),
            ("transcript", {"role": role, "transcriptType": "final", "transcript": line}),
            ("speech-update", {"status": "stopped", "role": role, "turn": turn}),
            ("conversation-update", {"role": role, "line": line}),
        ]
        turn += 1
    script = script[: max(0, length - 1)]
    script.append(("status-update", {"status": "ended", "endedReason": "customer-ended-call"}))
    return script[:length]


def build_bodies(n: int, n_calls: int, prefix: str, ts_base: int) -> list[bytes]:
    """``n`` message bodies over ``n_calls`` calls, in send order (round-robin over the calls)."""
    n_calls = max(1, min(n_calls, n))
    calls = [
        SimCall(
            id=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{prefix}-{i}")),
            index=i,
            assistant_id=ASSISTANTS[i % len(ASSISTANTS)],
            number=f"+1415{random.randrange(10**7):07d}",
            created_at=time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        )
        for i in range(n_calls)
    ]
    per_call = [n // n_calls + (1 if i < n % n_calls else 0) for i in range(n_calls)]
    scripts = [call_script(length) for length in per_call]
    bodies: list[bytes] = []
    for step in range(max(per_call)):
        for call, script in zip(calls, scripts, strict=True):
            if step >= len(script):
                continue
            kind, extra = script[step]
            message: dict[str, Any] = {"type": kind, "timestamp": ts_base + len(bodies)}
            if kind == "status-update":
                call.status = extra["status"]
                message.update(extra)
            elif kind == "conversation-update":
                call.turns.append({"role": extra["role"], "message": extra["line"], "time": ts_base + len(bodies)})
                recent = call.turns[-12:]
                message["messages"] = [{"role": "system", "message": "You are Acme's support agent."}, *recent]
                message["messagesOpenAIFormatted"] = [
                    {"role": "system", "content": "You are Acme's support agent."},
                    *({"role": t["role"], "content": t["message"]} for t in recent),
                ]
            else:
                message.update(extra)
            message["call"] = call.call_object()
            message["customer"] = {"number": call.number}
            message["phoneNumber"] = {"id": "pn-bench-0001", "number": "+14155550000"}
            bodies.append(json.dumps({"message": message}, separators=(",", ":")).encode())
    return bodies


@dataclass(slots=True)
class Tally:
    stored: int = 0
    duplicates: int = 0
    not_stored: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    first_error: str = ""
    latencies: list[float] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class Connection:
    """A minimal HTTP/1.1 keep-alive client for one connection. The load generator shares two cores
    with the server: httpx spends ~4 ms of CPU per request, more than the server does, so it would
    measure itself. This costs a few tens of microseconds."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        self.head = "".join(f"{name}: {value}\r\n" for name, value in headers.items()).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\n\r\n%s"
            % (self.path.encode(), self.host.encode(), self.head, len(body), body)
        )
        try:
            await self.writer.drain()
            status = int((await self.reader.readline()).split(b" ", 2)[1])
            length = 0
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            return status, await self.reader.readexactly(length)
        except (OSError, IndexError, ValueError, asyncio.IncompleteReadError):
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def send_all(url: str, headers: dict[str, str], bodies: list[bytes], conc: int) -> Tally:
    tally = Tally()
    next_index = 0
    total = len(bodies)
    last_report = time.monotonic()
    t0 = last_report

    async def worker() -> None:
        nonlocal next_index, last_report
        connection = Connection(url, headers)
        while next_index < total:
            body = bodies[next_index]
            next_index += 1
            start = time.perf_counter()
            try:
                status, content = await connection.post(body)
            except (OSError, IndexError, ValueError, asyncio.IncompleteReadError) as exc:
                tally.error(type(exc).__name__)
                tally.first_error = (
                    tally.first_error or f"{type(exc).__name__}: {exc!r} after {time.perf_counter() - start:.3f} s"
                )
                continue
            tally.latencies.append(time.perf_counter() - start)
            if status != 200:
                tally.error(f"HTTP {status}")
                continue
            ack = json.loads(content)
            if ack.get("stored"):
                tally.stored += 1
            elif ack.get("duplicate"):
                tally.duplicates += 1
            else:
                tally.not_stored += 1
            now = time.monotonic()
            if now - last_report >= 2.0:
                last_report = now
                done = len(tally.latencies)
                emit("progress", f"{done}/{total} sent, {done / (now - t0):.0f}/s, {sum(tally.errors.values())} errors")
        connection.close()

    await asyncio.gather(*(worker() for _ in range(conc)))
    return tally


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] if ordered else float("nan")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    random.seed(args.seed)
    ts_base = int(time.time() * 1000)
    warm = build_bodies(args.warmup, max(1, args.warmup // 10), f"{args.run_id}-warmup", ts_base)
    bodies = build_bodies(args.messages, args.calls, f"{args.run_id}-load", ts_base + len(warm) + 1)
    url = f"{args.url}/webhooks/vapi"
    headers = {"X-Vapi-Secret": args.secret, "Content-Type": "application/json"}
    warm_tally = await send_all(url, headers, warm, min(args.concurrency, 8))
    emit("progress", f"warm-up: {warm_tally.stored}/{len(warm)} stored; sending {len(bodies)} messages")
    cpu0, t0 = time.process_time(), time.perf_counter()
    tally = await send_all(url, headers, bodies, args.concurrency)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    ms = [x * 1000 for x in tally.latencies]
    return {
        "warmupSent": len(warm),
        "warmupStored": warm_tally.stored,
        "warmupErrors": warm_tally.errors,
        "sent": len(bodies),
        "calls": min(args.calls, len(bodies)),
        "concurrency": args.concurrency,
        "stored": tally.stored,
        "duplicates": tally.duplicates,
        "notStored": tally.not_stored,
        "errors": tally.errors,
        "firstError": tally.first_error,
        "wallSeconds": wall,
        "clientCpuSeconds": cpu,
        "meanBodyBytes": sum(map(len, bodies)) / max(1, len(bodies)),
        "latencyMs": {
            "p50": quantile(ms, 0.50),
            "p90": quantile(ms, 0.90),
            "p99": quantile(ms, 0.99),
            "max": max(ms, default=float("nan")),
            "mean": sum(ms) / len(ms) if ms else float("nan"),
        },
        "peakRssBytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--run-id", default=uuid.uuid4().hex[:8])
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        emit("result", asyncio.run(run(args)))
    else:
        emit("result", uvloop.run(run(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
