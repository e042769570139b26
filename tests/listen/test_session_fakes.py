"""A listen session on its own: built with fakes of our own bookkeeping (journal, recording rows) and
the real simulator and storage, so that what the session does is seen without a database."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import httpx
import pytest

from service.calls.events import NewEvent
from service.db.models import utcnow
from service.listen import session as session_module
from service.listen.relay import LiveRelay
from service.listen.session import BACKOFF_BASE_SECONDS, BACKOFF_CAP_SECONDS, CallTarget, ListenConfig, ListenSession
from service.metrics import Metrics
from service.recordings.service import Finalized, OpenSegment
from service.recordings.storage import StorageError, build_storage
from service.simulator import CallScript, SimulatorServer, Utterance, VapiSimulator
from service.simulator.calls import SimCall
from service.vapi.client import VapiClient

SCRIPT = CallScript(
    ring_after=0.1, answer_after=0.1, talk_seconds=3.0, turns=(Utterance("user", "Hello there.", at=0.5),)
)
LIVE = CallScript(ring_after=0.1, answer_after=0.1, talk_seconds=4.0, turns=())  # in real time: 4 s
CONFIG = ListenConfig(sample_rate=16_000, channels=2, connect_timeout=5, idle_timeout=5, max_frame_bytes=1 << 20)


@dataclass
class FakeJournal:
    events: list[tuple[str, NewEvent]] = field(default_factory=list)
    times: dict[str, float] = field(default_factory=dict)  # event type -> when it was last added (monotonic)

    def add(self, call_id: str, event: NewEvent) -> None:
        self.events.append((call_id, event))
        self.times[event.type] = time.monotonic()

    async def flush(self, call_id: str) -> bool:
        return True

    def types(self) -> list[str]:
        return [event.type for _, event in self.events]


@dataclass
class FakeRecordings:
    closed: list[tuple[int, int, str]] = field(default_factory=list)
    finalized: list[str | None] = field(default_factory=list)
    gaps: list[float | None] = field(default_factory=list)  # each segment's gap_seconds
    starts: list[tuple[dt.datetime, dt.datetime]] = field(default_factory=list)  # (started_at, written at)
    write_seconds: float = 0.0  # how long the segment's row takes to write (a busy database)

    async def open_segment(
        self, call_id: str, *, gap_seconds: float | None, started_at: dt.datetime, **_: Any
    ) -> OpenSegment:
        self.gaps.append(gap_seconds)
        await asyncio.sleep(self.write_seconds)
        self.starts.append((started_at, utcnow()))
        index = len(self.closed)
        return OpenSegment(uuid.uuid4(), uuid.uuid4(), index, f"{call_id}/{index:04d}.pcm", 0.0)

    async def close_segment(self, segment: OpenSegment, *, size: int, sha256: str) -> None:
        self.closed.append((segment.index, size, sha256))

    async def finalize(self, call_id: str, *, error: str | None = None) -> Finalized:
        self.finalized.append(error)
        size = sum(size for _, size, _ in self.closed)
        sha256 = self.closed[-1][2] if self.closed else hashlib.sha256().hexdigest()
        return Finalized("completed", size, sha256, [], error, size / 64_000)

    async def set_format(self, call_id: str, **_: Any) -> bool:
        return False


def fake_session(
    sim: VapiSimulator,
    call: SimCall,
    http: httpx.AsyncClient,
    *,
    storage: Any = None,
    config: ListenConfig = CONFIG,
) -> tuple[ListenSession, FakeJournal, FakeRecordings]:
    journal, recordings = FakeJournal(), FakeRecordings()
    session = ListenSession(
        call.id,
        db=cast(Any, None),  # never read: the target is given and the end is told
        storage=storage or build_storage("memory://"),
        recordings=cast(Any, recordings),
        vapi=VapiClient(http, base_url=sim.base_url or "", api_key=None, public_key=None, timeout=5),
        config=config,
        metrics=Metrics(),
        relay=LiveRelay(),
        journal=cast(Any, journal),
        reconcile=lambda _: _ended(),
        target=CallTarget(call.listen_url, listen_auth=False, answered=True),
    )
    return session, journal, recordings


def place(sim: VapiSimulator) -> SimCall:
    return sim.place_call({"assistantId": "a", "phoneNumberId": "p", "customer": {"number": "+14155550123"}})


async def test_a_session_records_a_call_with_fake_bookkeeping() -> None:
    sim = VapiSimulator(pace=4, script=SCRIPT)
    storage = build_storage("memory://")
    async with SimulatorServer(sim), httpx.AsyncClient() as http:
        call = place(sim)
        session, journal, recordings = fake_session(sim, call, http, storage=storage)

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


async def connected(journal: FakeJournal, segments: int = 1) -> float:
    """When the session's ``segments``-th connection was made (monotonic)."""
    async with asyncio.timeout(10):
        while journal.types().count("listen.connected") < segments:
            await asyncio.sleep(0.01)
    return journal.times["listen.connected"]


@dataclass
class Live:
    """A session running against a live simulated call (real time)."""

    sim: VapiSimulator
    call: SimCall
    session: ListenSession
    journal: FakeJournal
    recordings: FakeRecordings
    runner: asyncio.Task[None]

    async def connected_for(self, seconds: float) -> None:
        """Wait until the first connection has been open ``seconds``."""
        await asyncio.sleep(max(0.0, await connected(self.journal) + seconds - time.monotonic()))

    async def ended_by(self, tell: Callable[[], None]) -> float:
        """``tell`` the session (stop, the call's end); how long until it returned."""
        told_at = time.monotonic()
        tell()
        await asyncio.wait_for(self.runner, 10)
        return time.monotonic() - told_at


@asynccontextmanager
async def live_session(
    *,
    storage: Any = None,
    config: ListenConfig = CONFIG,
    before: Callable[[VapiSimulator, SimCall], None] | None = None,
) -> AsyncIterator[Live]:
    """A 4 s call at real pace and its session, started (``before`` runs first); ended and stopped after."""
    sim = VapiSimulator(pace=1, script=LIVE)
    async with SimulatorServer(sim), httpx.AsyncClient() as http:
        call = place(sim)
        if before is not None:
            before(sim, call)
        session, journal, recordings = fake_session(sim, call, http, storage=storage, config=config)
        live = Live(sim, call, session, journal, recordings, asyncio.create_task(session.run()))
        try:
            yield live
        finally:
            if not live.runner.done():
                session.call_ended()
                session.stop()
            await asyncio.wait_for(live.runner, 10)


def longest_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every reconnection wait at the top of its jitter: 0.2, 0.4, 0.8, 1.6 s..."""
    monkeypatch.setattr(
        session_module, "backoff_delay", lambda attempt: min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt)
    )


async def test_a_drop_is_noticed_at_once_and_the_gap_starts_with_it() -> None:
    """The session watches its socket once a second; a drop between two looks must still end the
    segment at once (the gap is counted from the drop, and reconnecting starts then)."""
    async with live_session() as live:
        await live.connected_for(1.5)  # half-way between two of the watch's once-a-second looks
        live.sim.refuse_listen(live.call.id, seconds=0.8)
        dropped_at = time.monotonic()
        assert live.sim.drop_listen(live.call.id) == 1
        await connected(live.journal, segments=2)
        times, gaps = live.journal.times, live.recordings.gaps
        assert times["listen.disconnected"] - dropped_at < 0.4  # the old once-a-second look: 0.5
        assert gaps[0] is None
        assert gaps[1] is not None
        assert 0.8 - 0.05 <= gaps[1] <= times["listen.connected"] - dropped_at + 0.05


async def test_stop_hands_the_call_over_at_once() -> None:
    async with live_session() as live:
        await live.connected_for(1.5)
        assert await live.ended_by(live.session.stop) < 0.4
        assert live.recordings.finalized == [], "the recording is left open for whoever resumes it"
        assert len(live.recordings.closed) == 1


async def test_a_refused_socket_is_tried_until_the_connect_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """At its longest the backoff's next wait (1.6 s) would pass the 2 s deadline 1.4 s in: the session
    still tries once more at the deadline rather than give up early."""
    longest_backoff(monkeypatch)
    started = time.monotonic()
    config = dataclasses.replace(CONFIG, connect_timeout=2)
    async with live_session(config=config, before=lambda sim, call: sim.refuse_listen(call.id, seconds=1.6)) as live:
        await connected(live.journal)
        assert 1.6 <= time.monotonic() - started < 2.5
        await live.sim.wait_for_status(live.call.id, "ended", timeout=20)
    assert live.recordings.finalized == [None]
    assert live.recordings.closed[0][1] > 0


class FlakyStorage:
    """Memory storage whose ``open_writer`` (a LIST on object storage) fails while ``away``."""

    def __init__(self) -> None:
        self.inner = build_storage("memory://")
        self.away = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def open_writer(self, key: str) -> Any:
        if self.away:
            raise StorageError(f"list {key} failed: bucket unreachable")
        return await self.inner.open_writer(key)


async def test_storage_away_when_a_connection_opens_its_segment_is_waited_out() -> None:
    """The socket drops while object storage is briefly unreachable: the reconnection waits for storage
    (the socket holds what arrives) instead of crashing the session and its recording."""
    storage = FlakyStorage()
    async with live_session(storage=storage) as live:
        await live.connected_for(1.0)
        storage.away = True
        assert live.sim.drop_listen(live.call.id) == 1
        await asyncio.sleep(0.8)
        storage.away = False
        await live.sim.wait_for_status(live.call.id, "ended", timeout=20)
    assert "listen.failed" not in live.journal.types()
    assert [index for index, _, _ in live.recordings.closed] == [0, 1]
    assert live.recordings.closed[1][1] > 64_000, "the second connection recorded seconds of audio"
    assert live.recordings.finalized == [None]


async def test_stop_during_the_wait_for_the_end_webhook_hands_over_at_once() -> None:
    """A normal close without the end webhook: the session waits a grace for it (then asks Vapi); a
    shutdown meanwhile must not wait out the grace."""
    async with live_session() as live:
        await live.connected_for(1.0)
        assert live.sim.drop_listen(live.call.id, close_code=1000) == 1
        await asyncio.sleep(0.5)  # closed, waiting for the end webhook
        assert await live.ended_by(live.session.stop) < 0.4
        assert live.recordings.finalized == []


async def test_the_end_of_the_call_ends_the_reconnection_backoff_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reconnecting with the backoff at its longest, the end webhook arrives: the recording is finalised
    then, not after the backoff's wait."""
    longest_backoff(monkeypatch)
    async with live_session() as live:
        await live.connected_for(0.5)
        live.sim.refuse_listen(live.call.id, seconds=30)
        assert live.sim.drop_listen(live.call.id) == 1
        await asyncio.sleep(1.7)  # refused at 0, 0.2, 0.6 and 1.4 s: now in a 1.6 s wait
        assert await live.ended_by(live.session.call_ended) < 0.4
        assert live.recordings.finalized == [None]


async def test_a_segment_starts_when_its_connection_opened_not_when_its_row_was_written() -> None:
    """Offsets into the recording count from a segment's start: a write delayed by a busy database must
    not move it (audio flows, held by the socket, from the moment the connection opened)."""
    async with live_session() as live:
        live.recordings.write_seconds = 0.4
        await live.connected_for(0.5)
        [(started_at, written_at)] = live.recordings.starts
        assert (written_at - started_at).total_seconds() >= 0.4
