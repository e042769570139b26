"""The listen WebSocket: paced stereo PCM frames plus JSON text frames, one sender per connection.

Served as a raw ASGI endpoint (mounted in the Litestar app) rather than a Litestar WebSocket handler, for
three reasons: the hot path (10,000 frames/s in the benchmark) goes straight to the server's ``send``;
refusals can answer a real HTTP status at the handshake (ASGI ``websocket.http.response``); and an abrupt
drop can abort the TCP transport without a close frame, as a crashed or unreachable gateway would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from service.simulator.audio import FRAME_SECONDS
from service.simulator.calls import SimCall, StopReason
from service.simulator.log import ListenRecord
from service.simulator.world import ListenWorld

# Plain ASGI callables: this endpoint speaks raw ASGI (see the module docstring).
Scope = MutableMapping[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _deny(scope: Scope, send: Send, status: int, message: str) -> None:
    """Refuse a WebSocket handshake with an HTTP response (403 close where the server cannot)."""
    body = json.dumps({"message": message, "statusCode": status}).encode()
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body, "more_body": False})
    else:  # pragma: no cover - every server we run supports the extension
        await send({"type": "websocket.close", "code": 1008, "reason": message})


class ListenConnection:
    """One accepted listen socket of a call."""

    def __init__(self, sim: ListenWorld, call: SimCall, send: Send, record: ListenRecord) -> None:
        self._sim = sim
        self.call = call
        self._send = send
        self.record = record
        self._texts: deque[str] = deque()
        self._wake = asyncio.Event()
        self.stop_reason: StopReason | None = None
        self._drop_after: int | None = None
        self._drop_code: int | None = None
        self.finished = asyncio.Event()

    # -- called by the simulator ---------------------------------------------------------------------

    def push_text(self, text: str) -> None:
        """Queue a text frame; it goes out before the next audio frame."""
        self._texts.append(text)
        self._wake.set()

    def wake(self) -> None:
        """Re-check the call's state now (answered, ended, faults) instead of at the next frame."""
        self._wake.set()

    def stop(self, reason: StopReason) -> None:
        """Close this connection soon: normally (``ended``), or ``shutdown`` (1001)."""
        if self.stop_reason is None:
            self.stop_reason = reason
        self._wake.set()

    def drop(self, *, after_frames: int = 0, close_code: int | None = None) -> None:
        """Drop the connection after ``after_frames`` more audio frames: with a close frame of
        ``close_code``, or (None) by aborting the transport without any close frame."""
        self._drop_after = self.record.audio_frames + max(0, after_frames)
        self._drop_code = close_code
        self._wake.set()

    # -- the connection ------------------------------------------------------------------------------

    async def run(self, receive: Receive) -> None:
        """Stream until the call ends, the client leaves, a fault drops us, or the simulator stops."""
        watcher = asyncio.get_running_loop().create_task(self._watch_client(receive), name="listen-client")
        try:
            await self._stream()
            await self._finish()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            self.finished.set()

    async def _watch_client(self, receive: Receive) -> None:
        # Listen sockets are send-only; reading tells us when the client goes away.
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                self.stop("client")
                return

    def _drop_due(self) -> bool:
        return self._drop_after is not None and self.record.audio_frames >= self._drop_after

    async def _flush_texts(self) -> None:
        while self._texts:
            text = self._texts.popleft()
            self.record.add_text(text)
            await self._send({"type": "websocket.send", "text": text})

    async def _stream(self) -> None:
        call = self.call
        loop = asyncio.get_running_loop()
        # Before audio starts (queued, ringing): only text frames, sent as they come.
        joined_before_audio = call.audio_t0 is None
        while call.audio_t0 is None:
            await self._flush_texts()
            if self.stop_reason is not None or call.end_frame is not None or self._drop_due():
                return
            self._wake.clear()
            await self._wake.wait()
        t0 = call.audio_t0
        frame_dt = FRAME_SECONDS / self._sim.pace
        index = 0 if joined_before_audio else max(0, int((loop.time() - t0) / frame_dt))
        while True:
            if self._texts:
                await self._flush_texts()
            if self.stop_reason is not None or self._drop_due():
                return
            end = call.end_frame
            if end is not None and index >= end:
                return
            if end is None and call.planned_end_frame is not None and index >= call.planned_end_frame:
                # The call's audio is over; its end (finish) is late: wait for it rather than overrun.
                self._wake.clear()
                await self._wake.wait()
                continue
            now = loop.time()
            stall_until = self._sim.listen_stall_until(call.id)
            if now < stall_until:
                await asyncio.sleep(stall_until - now)
                index = max(index, int((loop.time() - t0) / frame_dt))
                continue
            # Absolute schedule: frame n is sent once its 20 ms have elapsed (no drift, catches up).
            delay = t0 + (index + 1) * frame_dt - now
            if delay > 0 and end is None:
                await asyncio.sleep(delay)
                continue
            frame = call.frame(index)
            self.record.add_audio(frame, index)
            await self._send({"type": "websocket.send", "bytes": frame})
            index += 1

    async def _finish(self) -> None:
        record = self.record
        reason = self.stop_reason
        with contextlib.suppress(OSError):  # the client may be gone already (uvicorn's ClientDisconnected)
            if reason == "client":
                record.close = "client"
            elif reason == "shutdown":
                await self._close(1001, "going away", "shutdown")
            elif self._drop_due():
                if self._drop_code is None:
                    self._abort()
                else:
                    await self._close(self._drop_code, "injected fault", "code")
            else:
                await self._flush_texts()
                await self._close(1000, "call ended", "normal")
        record.closed_at = time.time()
        self._sim.log.add(
            "listen",
            self.call.id,
            event="closed",
            index=record.index,
            close=record.close,
            closeCode=record.close_code,
            frames=record.audio_frames,
            bytes=record.audio_bytes,
            sha256=record.sha256,
        )

    async def _close(self, code: int, reason: str, kind: str) -> None:
        self.record.close = kind
        self.record.close_code = code
        await self._send({"type": "websocket.close", "code": code, "reason": reason})

    def _abort(self) -> None:
        self.record.close = "abort"
        transport = getattr(getattr(self._send, "__self__", None), "transport", None)
        if transport is not None:
            transport.abort()


class ListenEndpoint:
    """Raw ASGI app for ``/{callId}/listen`` (and the legacy ``/{callId}/transport``)."""

    def __init__(self, sim: ListenWorld) -> None:
        self._sim = sim

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":  # pragma: no cover - Litestar routes only WebSockets here
            await send({"type": "http.response.start", "status": 426, "headers": [(b"upgrade", b"websocket")]})
            await send({"type": "http.response.body", "body": b"WebSocket upgrade required", "more_body": False})
            return
        sim = self._sim
        call_id = str(scope.get("path_params", {}).get("call_id", ""))
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        refusal = sim.listen_refusal(call_id, _header(scope, b"authorization"))
        if refusal is not None:
            status, reason = refusal
            sim.log.add("listen", call_id, event="refused", status=status, reason=reason)
            await _deny(scope, send, status, reason)
            return
        call = sim.calls[call_id]
        record = sim.log.new_listen_record(call_id, keep_audio=sim.keep_audio)
        connection = ListenConnection(sim, call, send, record)
        await send({"type": "websocket.accept"})
        call.connections.add(connection)
        sim.log.add("listen", call_id, event="connected", index=record.index)
        sim.notify()
        try:
            await connection.run(receive)
        finally:
            call.connections.discard(connection)
            sim.notify()


def event_text(payload: dict[str, Any]) -> str:
    """A listen-socket text frame."""
    return json.dumps(payload, separators=(",", ":"))
