"""A listen session on its own: built with fakes of our own bookkeeping (journal, recording rows) and
the real simulator and storage, so that what the session does is seen without a database."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any, cast

import httpx

from service.calls.events import NewEvent
from service.listen.relay import LiveRelay
from service.listen.session import CallTarget, ListenConfig, ListenSession
from service.metrics import Metrics
from service.recordings.service import Finalized, OpenSegment
from service.recordings.storage import build_storage
from service.simulator import CallScript, SimulatorServer, Utterance, VapiSimulator
from service.vapi.client import VapiClient

SCRIPT = CallScript(
    ring_after=0.1, answer_after=0.1, talk_seconds=3.0, turns=(Utterance("user", "Hello there.", at=0.5),)
)
CONFIG = ListenConfig(sample_rate=16_000, channels=2, connect_timeout=5, idle_timeout=5, max_frame_bytes=1 << 20)


@dataclass
class FakeJournal:
    events: list[tuple[str, NewEvent]] = field(default_factory=list)

    def add(self, call_id: str, event: NewEvent) -> None:
        self.events.append((call_id, event))

    async def flush(self, call_id: str) -> bool:
        return True

    def types(self) -> list[str]:
        return [event.type for _, event in self.events]


@dataclass
class FakeRecordings:
    closed: list[tuple[int, int, str]] = field(default_factory=list)
    finalized: list[str | None] = field(default_factory=list)

    async def open_segment(self, call_id: str, **_: Any) -> OpenSegment:
        index = len(self.closed)
        return OpenSegment(uuid.uuid4(), uuid.uuid4(), index, f"{call_id}/{index:04d}.pcm", 0.0)

    async def close_segment(self, segment: OpenSegment, *, size: int, sha256: str) -> None:
        self.closed.append((segment.index, size, sha256))

    async def finalize(self, call_id: str, *, error: str | None = None) -> Finalized:
        self.finalized.append(error)
        size = sum(size for _, size, _ in self.closed)
        return Finalized("completed", size, self.closed[-1][2], [], error, size / 64_000)

    async def set_format(self, call_id: str, **_: Any) -> bool:
        return False


async def test_a_session_records_a_call_with_fake_bookkeeping() -> None:
    sim = VapiSimulator(pace=4, script=SCRIPT)
    storage = build_storage("memory://")
    async with SimulatorServer(sim), httpx.AsyncClient() as http:
        call = sim.place_call({"assistantId": "a", "phoneNumberId": "p", "customer": {"number": "+14155550123"}})
        journal, recordings = FakeJournal(), FakeRecordings()
        session = ListenSession(
            call.id,
            db=cast(Any, None),  # never read: the target is given and the end is told
            storage=storage,
            recordings=cast(Any, recordings),
            vapi=VapiClient(http, base_url=sim.base_url or "", api_key=None, public_key=None, timeout=5),
            config=CONFIG,
            metrics=Metrics(),
            relay=LiveRelay(),
            journal=cast(Any, journal),
            reconcile=lambda _: _ended(),
            target=CallTarget(call.listen_url, listen_auth=False, answered=True),
        )

        async def end_when_vapi_says_so() -> None:
            await sim.wait_for_status(call.id, "ended", timeout=20)
            session.call_ended()

        ender = asyncio.create_task(end_when_vapi_says_so())
        try:
            await session.run()
        finally:
            ender.cancel()
            await asyncio.gather(ender, return_exceptions=True)

    sent = sim.audio_sent(call.id)
    assert len(sent) > 64_000, "seconds of audio were sent"
    stored = b"".join([chunk async for chunk in storage.read(f"{call.id}/0000.pcm", 0, len(sent))])
    assert stored == sent
    assert recordings.closed == [(0, len(sent), hashlib.sha256(sent).hexdigest())]
    assert recordings.finalized == [None]
    types = journal.types()
    assert types[0] == "listen.connected"
    assert "transcript" in types
    assert types[-1] == "recording.completed"
    await storage.close()


async def _ended() -> str:
    return "ended"
