"""One listen session: connect to a call's listenUrl and keep its audio and events.

Binary frames go to a :class:`RecordingWriter` (one storage segment per connection); text frames
become ``listen`` events. A connection that drops while the call is live is reconnected with
backoff and jitter, and the lost interval becomes a gap. A normal close means the call ended.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosedError, InvalidHandshake, InvalidStatus

from service.calls.events import NewEvent, append_events
from service.db.engine import Database
from service.db.models import Call
from service.listen.writer import RecordingWriter
from service.recordings.service import RecordingService
from service.recordings.storage import RecordingStorage
from service.vapi.client import VapiClient

log = structlog.get_logger(__name__)

BACKOFF_BASE_SECONDS = 0.2
BACKOFF_CAP_SECONDS = 5.0
# After Vapi reports the end, how long the socket may take to close by itself.
END_GRACE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class ListenConfig:
    sample_rate: int
    channels: int
    connect_timeout: float
    max_frame_bytes: int


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
    ) -> None:
        self.call_id = call_id
        self._db = db
        self._storage = storage
        self._recordings = recordings
        self._vapi = vapi
        self._config = config
        self._ended = asyncio.Event()
        self._stopping = asyncio.Event()
        self._socket: ClientConnection | None = None

    def call_ended(self) -> None:
        """Vapi reported the end: stop reconnecting; let the socket close by itself (briefly)."""
        self._ended.set()

    def stop(self) -> None:
        """Shutdown: close the socket now and leave the recording open for whoever resumes it."""
        self._stopping.set()

    async def run(self) -> None:
        async with self._db.read() as session:
            call = await session.get(Call, self.call_id)
        if call is None or not call.listen_url or call.status == "ended":
            return
        listen_url = call.listen_url
        headers = self._vapi.monitor_headers(authenticated=call.listen_auth)
        disconnected_at: float | None = None
        error: str | None = None
        while not self._stopping.is_set():
            try:
                socket = await self._connect(listen_url, headers)
            except PermanentListenError as exc:
                error = str(exc)
                break
            if socket is None:
                if not (self._ended.is_set() or self._stopping.is_set()):
                    error = f"could not connect to the listen socket within {self._config.connect_timeout:g} s"
                break
            gap = time.monotonic() - disconnected_at if disconnected_at is not None else 0.0
            closed_normally = await self._record(socket, gap_seconds=gap)
            if closed_normally or self._ended.is_set() or self._stopping.is_set():
                break
            disconnected_at = time.monotonic()
            await self._journal("listen.disconnected", {"reason": "connection dropped"})
        if self._stopping.is_set() and not self._ended.is_set():
            log.info("listen session stopped", call_id=self.call_id)
            return
        recording = await self._recordings.finalize(self.call_id, error=error)
        if error:
            log.warning("listen session gave up", call_id=self.call_id, reason=error)
            await self._journal("listen.failed", {"reason": error})
        if recording is not None:
            await self._journal(
                "recording.completed",
                {"status": recording.status, "bytes": recording.bytes, "sha256": recording.sha256},
            )

    async def _connect(self, url: str, headers: dict[str, str]) -> ClientConnection | None:
        """Connect with backoff until it works, the call ends, we stop, or time runs out."""
        deadline = time.monotonic() + self._config.connect_timeout
        attempt = 0
        while not (self._ended.is_set() or self._stopping.is_set()):
            try:
                return await connect(
                    url,
                    additional_headers=headers,
                    max_size=self._config.max_frame_bytes,
                    open_timeout=min(10.0, self._config.connect_timeout),
                    user_agent_header="switchboard",
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                if 400 <= status < 500 and status not in (404, 408, 425, 429):
                    raise PermanentListenError(f"listen socket refused the connection with HTTP {status}") from None
                reason = f"HTTP {status}"
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                reason = type(exc).__name__
            delay = backoff_delay(attempt)
            attempt += 1
            if time.monotonic() + delay > deadline:
                return None
            log.info("listen connect failed, retrying", call_id=self.call_id, reason=reason, delay=round(delay, 2))
            await self._sleep(delay)
        return None

    async def _sleep(self, seconds: float) -> None:
        """Sleep, waking early when the call ends or the session stops."""
        waiters = [asyncio.ensure_future(self._ended.wait()), asyncio.ensure_future(self._stopping.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _record(self, socket: ClientConnection, *, gap_seconds: float) -> bool:
        """Pump one connection into a new segment; True when the socket closed normally."""
        segment = await self._recordings.open_segment(
            self.call_id,
            sample_rate=self._config.sample_rate,
            channels=self._config.channels,
            gap_seconds=gap_seconds,
            gap_reason="listen socket dropped",
        )
        writer = RecordingWriter(await self._storage.open_writer(segment.key))
        await self._journal("listen.connected", {"segment": segment.index})
        log.info("listening", call_id=self.call_id, segment=segment.index)
        closer = asyncio.create_task(self._close_when_told(socket), name=f"listen-closer:{self.call_id}")
        closed_normally = True
        try:
            async for message in socket:
                if isinstance(message, bytes):
                    await writer.append(message)
                else:
                    await self._journal_event(text_frame_event(message))
        except ConnectionClosedError:
            closed_normally = False
        finally:
            closer.cancel()
            await asyncio.gather(closer, return_exceptions=True)
            await writer.close()
            await self._recordings.close_segment(segment, size=writer.bytes, sha256=writer.sha256)
        return closed_normally

    async def _close_when_told(self, socket: ClientConnection) -> None:
        """Close the socket at shutdown, or when the call ended but the socket lingers."""
        ended = asyncio.ensure_future(self._ended.wait())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait([ended, stopping], return_when=asyncio.FIRST_COMPLETED)
            if stopping not in done:
                await self._sleep_unless_stopping(END_GRACE_SECONDS)
            await socket.close()
        finally:
            ended.cancel()
            stopping.cancel()
            await asyncio.gather(ended, stopping, return_exceptions=True)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        try:
            async with asyncio.timeout(seconds):
                await self._stopping.wait()
        except TimeoutError:
            pass

    async def _journal(self, kind: str, payload: dict[str, Any]) -> None:
        await self._journal_event(NewEvent("switchboard", kind, payload))

    async def _journal_event(self, event: NewEvent) -> None:
        async with self._db.write() as session:
            await append_events(session, self.call_id, [event])
