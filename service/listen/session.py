"""One listen session: connect to a call's listenUrl and keep its audio and events.

The socket is driven from the event loop's ``data_received`` callback (:mod:`service.listen.socket`):
binary frames go synchronously to a :class:`RecordingWriter` (one storage segment per connection) and
to the live relay, with no coroutine wake-up per frame; text frames become ``listen`` events, written
in shared batches by the :class:`EventJournal`. A connection that drops, or goes silent after the call
was answered, is reconnected with backoff and jitter, and the lost interval becomes a gap. A normal
close usually means the call ended: the session waits briefly for Vapi's end webhook, else asks Vapi
(``GET /call/{id}``) before reconnecting. Database outages do not stop the recording: events wait in
the journal (bounded) and are written when the database is back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import structlog
from sqlalchemy import select
from websockets.exceptions import ConnectionClosedOK, InvalidHandshake, InvalidStatus

from service.calls import status as call_status
from service.calls.events import NewEvent
from service.db.engine import Database
from service.db.models import Call, utcnow
from service.errors import database_unavailable
from service.listen.journal import EventJournal
from service.listen.relay import LiveRelay
from service.listen.socket import ListenSocket, open_listen_socket
from service.listen.splitter import SegmentSplitter
from service.listen.writer import RecordingWriter
from service.metrics import Metrics
from service.outbound_urls import UnsafeUrlError
from service.recordings.service import RecordingService
from service.recordings.storage import RecordingStorage, StorageError
from service.tasks import TaskOwner
from service.vapi.client import VapiClient

log = structlog.get_logger(__name__)
T = TypeVar("T")

BACKOFF_BASE_SECONDS = 0.2
BACKOFF_CAP_SECONDS = 5.0
# After the socket closes normally, how long to wait for Vapi's end webhook before asking Vapi.
END_GRACE_SECONDS = 3.0
# Whether to offer permessage-deflate. PCM audio barely compresses, and inflating every frame costs CPU
# on both ends: not offered, so the server sends plain frames.
COMPRESSION = False
Outcome = Literal["closed", "dropped", "idle", "stopped"]


@dataclass(frozen=True, slots=True)
class CallTarget:
    """What a session needs to connect, when the caller already has it (a call just placed here):
    the session then connects without reading the call first."""

    listen_url: str
    listen_auth: bool
    answered: bool


@dataclass(frozen=True, slots=True)
class ListenConfig:
    sample_rate: int
    channels: int
    connect_timeout: float
    idle_timeout: float
    max_frame_bytes: int
    read_interval: float = 0.0  # seconds between reads of the socket (0: as frames arrive)


class PermanentListenError(Exception):
    """Reconnecting cannot help (the socket refused us with a 4xx)."""


_jitter = random.Random()  # noqa: S311 - jitter, not cryptography


def backoff_delay(attempt: int, *, rng: random.Random = _jitter) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base·2^attempt)]."""
    return rng.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2**attempt))


def text_frame_event(text: str) -> NewEvent:
    """A listen-socket text frame as a timeline event; garbage is kept raw, never fatal."""
    try:
        payload: Any = json.loads(text)
    except ValueError:
        return NewEvent("listen", "listen.raw", {"raw": text})
    kind = payload.get("type") if isinstance(payload, dict) else None
    return NewEvent("listen", kind if isinstance(kind, str) and kind else "listen.message", payload)


def announced_format(payload: Any) -> tuple[int, int] | None:
    """``(sampleRate, channels)`` if a text frame announces the audio format."""
    if not isinstance(payload, dict):
        return None
    rate, channels = payload.get("sampleRate"), payload.get("channels")
    if isinstance(rate, int) and isinstance(channels, int) and 8000 <= rate <= 48000 and channels in (1, 2):
        return rate, channels
    return None


class ListenSession:
    """Records one call. :meth:`run` returns when the call ended, the session gave up, or it was stopped."""

    def __init__(
        self,
        call_id: str,
        *,
        db: Database,
        storage: RecordingStorage,
        recordings: RecordingService,
        vapi: VapiClient,
        config: ListenConfig,
        metrics: Metrics,
        relay: LiveRelay,
        journal: EventJournal,
        reconcile: Callable[[str], Awaitable[str | None]],
        target: CallTarget | None = None,
    ) -> None:
        """``journal`` writes the session's timeline events (shared by every session); ``reconcile``
        asks Vapi for the call's status and stores it; ``target``: what to connect to, when the caller
        already has it (else the session reads the call first)."""
        self.call_id = call_id
        self._db = db
        self._storage = storage
        self._recordings = recordings
        self._vapi = vapi
        self._config = config
        self._metrics = metrics
        self._relay = relay
        self._reconcile = reconcile
        self._ended = asyncio.Event()
        self._stopping = asyncio.Event()
        self._told = asyncio.Event()  # call_ended() or stop(): ends whatever the session waits for
        self._answered = False
        self._storage_error: str | None = None
        self.journal = journal
        self.target = target
        self._wakeup: asyncio.Future[None] | None = None

    def call_ended(self) -> None:
        """Vapi reported the end: stop reconnecting."""
        self._ended.set()
        self._told.set()

    @property
    def ended(self) -> bool:
        """Whether the session knows the call ended."""
        return self._ended.is_set()

    def call_answered(self) -> None:
        self._answered = True

    def stop(self) -> None:
        """Shutdown or lost lease: close the socket now and leave the recording for whoever resumes it."""
        self._stopping.set()
        self._told.set()
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def run(self) -> None:
        try:
            await self._run()
        except Exception as exc:
            self._metrics.listen_failures.labels(reason="crashed").inc()
            self._journal("listen.failed", {"reason": f"session crashed: {type(exc).__name__}"})
            raise
        finally:
            await self.journal.flush(self.call_id)

    async def _run(self) -> None:
        target = self.target
        if target is None:
            async with self._db.read() as session:
                call = await session.get(Call, self.call_id)
            if call is None or not call.listen_url:
                return
            if call.status == "ended":
                # A session that crashed, or a replica that died, may have left the recording open.
                if await self._recordings.is_open(self.call_id):
                    self._ended.set()
                    await self._finish(None)
                return
            target = CallTarget(call.listen_url, call.listen_auth, call.status in call_status.ANSWERED)
        self._answered = self._answered or target.answered
        listen_url = target.listen_url
        headers = self._vapi.monitor_headers(authenticated=target.listen_auth)
        disconnected_at: float | None = None
        error = await self._refused(listen_url)  # before any connection: it may carry the Vapi public key
        while error is None and not self._stopping.is_set():
            try:
                socket = await self._connect(listen_url, headers)
            except PermanentListenError as exc:
                error = str(exc)
                break
            if socket is None:
                if self._stopping.is_set() or self._ended.is_set() or await self._reconcile_ended():
                    break
                error = f"could not connect to the listen socket within {self._config.connect_timeout:g} s"
                break
            if self._stopping.is_set():  # stopped during the handshake: the call is left to whoever resumes it
                socket.abort()
                break
            if disconnected_at is not None:
                self._metrics.listen_reconnects.inc()
            gap = time.monotonic() - disconnected_at if disconnected_at is not None else None
            outcome, disconnected_at = await self._record(socket, gap_seconds=gap, connected_at=utcnow())
            if self._stopping.is_set() or self._ended.is_set():
                break
            if outcome == "closed" and (
                await self._wait_for_end(END_GRACE_SECONDS) or self._stopping.is_set() or await self._reconcile_ended()
            ):
                break
            self._journal("listen.disconnected", {"reason": outcome})
            log.info("listen socket lost, reconnecting", call_id=self.call_id, reason=outcome)
        if self._stopping.is_set() and not self._ended.is_set():
            log.info("listen session handed over", call_id=self.call_id)
            return
        await self._finish(error or self._storage_error)

    async def _refused(self, listen_url: str) -> str | None:
        """Why the session must not connect to ``listen_url`` (an internal address, say), else None."""
        try:
            await self._vapi.check_monitor_url(listen_url)
        except UnsafeUrlError as exc:
            return f"the listen URL is refused: {exc}"
        return None

    async def _finish(self, error: str | None) -> None:
        recording = await self._persist(lambda: self._recordings.finalize(self.call_id, error=error), "finalize")
        if error:
            self._metrics.listen_failures.labels(reason="gave-up").inc()
            log.warning("listen session ended with an error", call_id=self.call_id, reason=error)
            self._journal("listen.failed", {"reason": error})
        if recording is not None:
            log.info(
                "recording completed",
                call_id=self.call_id,
                status=recording.status,
                bytes=recording.bytes,
                duration_seconds=round(recording.seconds, 3),
                gaps=len(recording.gaps),
                gap_seconds=round(sum(gap["durationSeconds"] for gap in recording.gaps), 3),
                error=recording.error,
            )
            self._journal(
                "recording.completed",
                {"status": recording.status, "bytes": recording.bytes, "sha256": recording.sha256},
            )
        await self.journal.flush(self.call_id)

    async def _reconcile_ended(self) -> bool:
        """Ask Vapi whether the call ended (its end webhook may have been lost: Vapi does not retry)."""
        try:
            status = await self._reconcile(self.call_id)
        except Exception as exc:  # Vapi unreachable: decide with what we know
            log.warning("could not reconcile call with Vapi", call_id=self.call_id, error=type(exc).__name__)
            return False
        if status == "ended":
            self._ended.set()
        return status == "ended"

    async def _wait_for_end(self, seconds: float) -> bool:
        """Wait for the end webhook: on this replica it sets ``_ended``; one read of the call at the end
        of the wait sees it if another replica took it (no polling: every call ends this way)."""
        await self._wait(self._told, seconds)
        if self._ended.is_set() or self._stopping.is_set():
            return self._ended.is_set()
        try:
            async with self._db.read() as session:
                status = await session.scalar(select(Call.status).where(Call.id == self.call_id))
        except Exception as exc:
            if not database_unavailable(exc):
                raise
            return self._ended.is_set()
        if status == "ended":
            self._ended.set()
        return self._ended.is_set()

    async def _connect(self, url: str, headers: dict[str, str]) -> ListenSocket | None:
        """Connect with backoff until it works, the call ends, we stop, or time runs out."""
        deadline = time.monotonic() + self._config.connect_timeout
        attempt = 0
        while not (self._ended.is_set() or self._stopping.is_set()):
            try:
                return await open_listen_socket(
                    url,
                    headers=headers,
                    max_size=self._config.max_frame_bytes,
                    timeout=min(10.0, self._config.connect_timeout),
                    compression=COMPRESSION,
                    read_interval=self._config.read_interval,
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                if status == 401 and not headers and self._vapi.has_public_key:
                    # The monitor plan wants the public key though Switchboard never saw it say so.
                    headers = self._vapi.monitor_headers(authenticated=True)
                    continue
                if 400 <= status < 500 and status not in (404, 408, 425, 429):
                    raise PermanentListenError(f"listen socket refused the connection with HTTP {status}") from None
                reason = f"HTTP {status}"
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                reason = type(exc).__name__
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            delay = min(backoff_delay(attempt), remaining)  # the last try comes at the deadline, not before
            attempt += 1
            if attempt % 5 == 0 and await self._reconcile_ended():
                return None
            log.info("listen connect failed, retrying", call_id=self.call_id, reason=reason, delay=round(delay, 2))
            await self._wait(self._told, delay)
        return None

    @staticmethod
    async def _wait(event: asyncio.Event, seconds: float) -> bool:
        """Wait up to ``seconds`` for ``event``; True if it is set."""
        try:
            async with asyncio.timeout(max(seconds, 0)):
                await event.wait()
        except TimeoutError:
            pass
        return event.is_set()

    async def _record(
        self, socket: ListenSocket, *, gap_seconds: float | None, connected_at: dt.datetime
    ) -> tuple[Outcome, float]:
        """Record one connection into a new segment, until it closes (or we stop, or it goes silent).
        Returns why it ended and when (``time.monotonic()``): the next segment's gap starts then, not
        after this one's bookkeeping."""
        try:
            segment = await self._persist(
                lambda: self._recordings.open_segment(
                    self.call_id,
                    sample_rate=self._config.sample_rate,
                    channels=self._config.channels,
                    gap_seconds=gap_seconds,
                    gap_reason="listen socket dropped"
                    if gap_seconds is not None
                    else "not recorded (restart or takeover)",
                    started_at=connected_at,  # its audio flows from now, however long the write takes
                ),
                "open segment",
            )
            sink = await self._persist(lambda: self._storage.open_writer(segment.key), "open storage", storage=True)
        except BaseException:
            socket.abort()
            raise
        if segment.gap_seconds > 0:
            self._metrics.listen_gaps.inc()

        def pressure(on: bool) -> None:
            if on:
                socket.pause_reading("storage")
            else:
                socket.resume_reading("storage")

        splitter = SegmentSplitter(  # a storage outage that dropped audio moves on to a next segment
            self.call_id,
            segment,
            storage=self._storage,
            recordings=self._recordings,
            persist=self._persist,
            sample_rate=self._config.sample_rate,
            channels=self._config.channels,
            metrics=self._metrics,
        )
        writer = RecordingWriter(
            sink, metrics=self._metrics, name=self.call_id, pressure=pressure, split=splitter, notify=self._journal
        )
        self._journal("listen.connected", {"segment": segment.index})
        log.info("listening", call_id=self.call_id, segment=segment.index)
        recorder = _Recorder(self, writer, may_set_format=segment.index == 0)
        silent_since: float | None = None
        try:
            socket.attach(recorder)
            silent_since = await self._watch(socket, writer, recorder)
        finally:
            ended_at = time.monotonic() if silent_since is None else silent_since
            await socket.close()  # whatever ended the watch, never leave the upstream connection open
            await recorder.settle()
            await writer.close()
            self._storage_error = self._storage_error or writer.error
            await self._persist(
                lambda: self._recordings.close_segment(
                    splitter.current, size=writer.bytes_written, sha256=writer.sha256
                ),
                "close segment",
            )
        if self._stopping.is_set():
            return "stopped", ended_at
        if silent_since is not None:
            return "idle", ended_at
        return "closed" if isinstance(socket.close_exc, ConnectionClosedOK) else "dropped", ended_at

    async def _watch(self, socket: ListenSocket, writer: RecordingWriter, recorder: _Recorder) -> float | None:
        """Once a second until the socket closes or we stop: flush sparse audio, keep the socket alive,
        and notice a silent one: it sent nothing for ``idle_timeout`` after the call was answered (returns
        when it was last heard from, to the second; None if it closed or we stop)."""
        loop = asyncio.get_running_loop()
        last_activity, last_count = time.monotonic(), -1
        while not (socket.closed.done() or self._stopping.is_set()):
            self._wakeup = loop.create_future()
            await asyncio.wait((socket.closed, self._wakeup), timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
            if socket.closed.done() or self._stopping.is_set():
                break
            writer.flush_if_due()
            if not socket.keepalive():
                log.warning("listen socket did not answer a ping, reconnecting", call_id=self.call_id)
                socket.abort()
                break
            count = writer.received + recorder.texts
            if count != last_count:
                last_activity, last_count = time.monotonic(), count
                self._answered = self._answered or writer.received > 0
            elif self._answered and time.monotonic() - last_activity > self._config.idle_timeout:
                log.warning("listen socket silent, reconnecting", call_id=self.call_id)
                return last_activity
        self._wakeup = None
        return None

    def _on_text(self, text: str, may_set_format: bool) -> Coroutine[Any, Any, None] | None:
        """A text frame: journalled; a format announcement also updates the recording (returned)."""
        self._metrics.listen_text_frames.inc()
        event = text_frame_event(text)
        self.journal.add(self.call_id, event)
        fmt = announced_format(event.payload) if may_set_format else None
        return self._set_format(*fmt) if fmt else None

    async def _set_format(self, sample_rate: int, channels: int) -> None:
        if await self._recordings.set_format(self.call_id, sample_rate=sample_rate, channels=channels):
            log.info("listen socket announced its format", call_id=self.call_id, rate=sample_rate, channels=channels)

    async def _persist(self, operation: Callable[[], Awaitable[T]], what: str, *, storage: bool = False) -> T:
        """Recording bookkeeping that must reach the database (``storage``: or the recording storage):
        retried while it is unavailable, for as long as a connection is (the socket holds what arrives)."""
        deadline = time.monotonic() + self._config.connect_timeout
        attempt = 0
        while True:
            try:
                return await operation()
            except Exception as exc:
                if database_unavailable(exc):
                    away = "database"
                elif storage and isinstance(exc, StorageError):
                    away = "storage"
                else:
                    raise
                if time.monotonic() > deadline:
                    raise
                log.warning(f"{away} unavailable, retrying", call_id=self.call_id, operation=what)
            await asyncio.sleep(0.1 + backoff_delay(attempt))
            attempt += 1

    def _journal(self, kind: str, payload: dict[str, Any]) -> None:
        """A Switchboard event on the call's timeline (written by the journal, in order with the rest)."""
        self.journal.add(self.call_id, NewEvent("switchboard", kind, payload))


class _Recorder:
    """The frame handler of one connection: called from the socket's ``data_received``, never awaits."""

    __slots__ = ("_append", "_relay", "_session", "_tasks", "_writer", "may_set_format", "texts")

    def __init__(self, session: ListenSession, writer: RecordingWriter, *, may_set_format: bool) -> None:
        self._session = session
        self._writer = writer
        self._append = writer.append
        self._relay = session._relay
        self._tasks = TaskOwner("listen-format")
        self.may_set_format = may_set_format
        self.texts = 0

    def on_binary(self, data: bytes | bytearray | memoryview) -> None:
        self._append(data)
        if self._relay:
            self._relay.publish(bytes(data))

    def on_text(self, text: str) -> None:
        self.texts += 1
        may_set_format = self.may_set_format and self._writer.received == 0
        work = self._session._on_text(text, may_set_format)
        if work is not None:
            self._tasks.spawn(work, name=self._session.call_id)
        if self._relay:
            self._relay.publish(text)

    async def settle(self) -> None:
        """Wait for the work text frames started (a format announcement's update)."""
        await self._tasks.wait()
