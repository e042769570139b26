"""A listen socket without a coroutine per frame: ``websockets``' sans-I/O client driven from callbacks.

``websockets.asyncio`` wakes the reading coroutine for every message (``async for message in socket``):
at 50 frames/s per call that wake-up is most of a listener's CPU. Here an :class:`asyncio.Protocol` feeds
the bytes the event loop read to :class:`websockets.client.ClientProtocol` (``receive_data`` /
``events_received`` / ``data_to_send``) and hands every complete message to a :class:`FrameHandler`
synchronously, from ``data_received``: the recording buffer takes a binary frame with no task switch.

What the asyncio client did and this keeps: the opening handshake (``Authorization`` and the other
headers, ``User-Agent``, a timeout, HTTP status errors as :class:`~websockets.exceptions.InvalidStatus`),
the ``max_size`` bound (a larger frame fails the connection with 1009), automatic pong replies, the
closing handshake (a normal close is :class:`~websockets.exceptions.ConnectionClosedOK`), keepalive pings
(:meth:`ListenSocket.keepalive`, called by the session's ticker), and backpressure: a handler that
cannot keep up pauses reading from the socket. Not supported (listen URLs need neither): HTTP redirects
during the handshake and HTTP(S) proxies.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from typing import Protocol, cast

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.extensions.permessage_deflate import enable_client_permessage_deflate
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

CLOSE_TIMEOUT = 2.0  # after the closing handshake, how long the server gets to close TCP
PING_INTERVAL = 20.0  # like websockets' default keepalive
PING_TIMEOUT = 20.0
EARLY_LIMIT_BYTES = 1 << 20  # frames held before a handler is attached (the segment is being opened)

_TEXT, _BINARY, _CONT, _PING, _PONG = Opcode.TEXT, Opcode.BINARY, Opcode.CONT, Opcode.PING, Opcode.PONG


class FrameHandler(Protocol):
    """Receives the messages of a listen socket, synchronously, in order."""

    def on_binary(self, data: bytes | bytearray | memoryview) -> None: ...

    def on_text(self, text: str) -> None: ...


class ListenSocket(asyncio.Protocol):
    """One client connection. Open with :func:`open_listen_socket`, then :meth:`attach` a handler.

    With a ``read_interval``, reading pauses for that long after each read once the connection is open:
    the frames of the interval gather in the kernel's receive buffer (a few KiB: 0.2 s of 16 kHz stereo
    is 12.8 KB) and arrive in one read, so the event loop wakes once per interval per call instead of
    once per 20 ms frame — the largest per-frame cost of a Python listener. Messages are delayed by at
    most the interval; the closing handshake is read at once.
    """

    def __init__(
        self, protocol: ClientProtocol, loop: asyncio.AbstractEventLoop, *, read_interval: float = 0.0
    ) -> None:
        self._protocol = protocol
        self._loop = loop
        self._read_interval = read_interval
        self._read_timer: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[Response] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._handler: FrameHandler | None = None
        self._early: list[bytes | str] = []  # messages that arrived before a handler was attached
        self._early_bytes = 0
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self._paused_by: set[str] = set()
        self._close_timer: asyncio.TimerHandle | None = None
        self._ping: tuple[bytes, float] | None = None  # (payload, sent at) of the unanswered ping
        self._last_ping = loop.time()
        self.connection_error: BaseException | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not registered as such
        self._send_pending()

    def data_received(self, data: bytes) -> None:
        protocol = self._protocol
        protocol.receive_data(data)
        events = protocol.events_received()
        if protocol.writes:  # pongs, the close echo: rare, so not an unconditional call per frame
            self._send_pending()
        if protocol.close_expected():
            self._expect_close()
        handler = self._handler
        for event in events:
            if type(event) is Frame:
                opcode = event.opcode
                if opcode is _BINARY and event.fin and handler is not None:
                    handler.on_binary(event.data)  # the hot path: 50 frames/s per call
                elif opcode is _BINARY or opcode is _TEXT or opcode is _CONT:
                    self._on_data_frame(event)
                elif opcode is _PONG:
                    self._on_pong(bytes(event.data))
            elif isinstance(event, Response) and not self.opened.done():
                if protocol.handshake_exc is not None:
                    self.opened.set_exception(protocol.handshake_exc)
                else:
                    self.opened.set_result(event)
        if self._read_interval and self._read_timer is None and self.opened.done():
            # Let the next frames gather in the kernel's buffer: one read (and one wake-up of the
            # loop) per interval instead of one per 20 ms frame.
            self.pause_reading("gather")
            self._read_timer = self._loop.call_later(self._read_interval, self._gathered)

    def _gathered(self) -> None:
        self._read_timer = None
        self.resume_reading("gather")

    def _stop_gathering(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self.resume_reading("gather")

    def eof_received(self) -> None:
        self._protocol.receive_eof()
        self._protocol.events_received()
        self._send_pending()
        # A WebSocket never writes after the peer's EOF: let asyncio close the transport.

    def connection_lost(self, exc: Exception | None) -> None:
        self._protocol.receive_eof()  # idempotent: the state becomes CLOSED
        # Nothing more arrives: let go of the handler, which (through the recording writer's
        # backpressure callback) refers back to this socket. Without this the cycle keeps every ended
        # session, its writer and its parser until a full collection of the cyclic garbage collector.
        # Messages that came before a handler was attached stay for attach(), which the session calls
        # next (they refer to nothing).
        self._handler = None
        self._fragments = []
        if self.connection_error is None:
            self.connection_error = exc
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._read_timer is not None:
            self._read_timer.cancel()
        if not self.opened.done():
            self.opened.set_exception(
                self._protocol.handshake_exc or ConnectionError("the connection closed during the handshake")
            )
        if not self.closed.done():
            self.closed.set_result(None)

    # -- for the session -----------------------------------------------------------------------------

    def attach(self, handler: FrameHandler) -> None:
        """Deliver messages to ``handler`` from now on (first those that arrived before)."""
        early, self._early, self._early_bytes = self._early, [], 0
        for message in early:
            _deliver(handler, message)
        if self.closed.done():  # nothing more will come: hold no reference to it (see connection_lost)
            return
        self._handler = handler
        self.resume_reading("early")

    def pause_reading(self, reason: str) -> None:
        """Stop reading from the socket (backpressure) until :meth:`resume_reading` with ``reason``."""
        if not self._paused_by and self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()
        self._paused_by.add(reason)

    def resume_reading(self, reason: str) -> None:
        if reason not in self._paused_by:
            return
        self._paused_by.discard(reason)
        if not self._paused_by and self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    @property
    def is_closed(self) -> bool:
        return self.closed.done()

    @property
    def close_exc(self) -> ConnectionClosed:
        """Why the connection closed: :class:`ConnectionClosedOK` for a normal close (1000/1001)."""
        return self._protocol.close_exc

    def keepalive(self) -> bool:
        """Send a ping when one is due; False when the last one went unanswered for too long."""
        now = self._loop.time()
        if self._ping is not None:
            return now - self._ping[1] <= PING_TIMEOUT
        if now - self._last_ping >= PING_INTERVAL and self._protocol.state is State.OPEN:
            payload = os.urandom(4)
            self._ping, self._last_ping = (payload, now), now
            self._protocol.send_ping(payload)
            self._send_pending()
        return True

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """The closing handshake, within ``CLOSE_TIMEOUT``; then the TCP connection is closed anyway."""
        if self._transport is None or self.closed.done():
            return
        self._stop_gathering()  # the server's closing frame is read as soon as it comes
        if self._protocol.state is State.OPEN:
            self._protocol.send_close(code, reason)
            self._send_pending()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(self.closed)
        except TimeoutError:
            self.abort()
            await asyncio.shield(self.closed)

    def abort(self) -> None:
        """Drop the TCP connection now, without a closing handshake."""
        if self._transport is not None:
            self._transport.abort()

    # -- internals -----------------------------------------------------------------------------------

    def _send_pending(self) -> None:
        transport = self._transport
        if transport is None:
            return
        for data in self._protocol.data_to_send():
            if transport.is_closing():
                return
            if data:
                transport.write(data)
            elif transport.can_write_eof():
                try:
                    transport.write_eof()
                except (OSError, RuntimeError):  # uvloop raises RuntimeError on a closing transport
                    transport.abort()
            else:
                transport.close()

    def _expect_close(self) -> None:
        """The server should now close TCP; make sure it happens within ``CLOSE_TIMEOUT``."""
        if self._close_timer is None and self._transport is not None:
            self._close_timer = self._loop.call_later(CLOSE_TIMEOUT, self._transport.abort)

    def _on_data_frame(self, frame: Frame) -> None:
        """Text frames, fragmented messages, and frames that arrive before a handler is attached."""
        if frame.opcode is not _CONT:
            self._fragments, self._fragment_text = [], frame.opcode is _TEXT
        self._fragments.append(bytes(frame.data))
        if not frame.fin:
            return
        data = b"".join(self._fragments)
        self._fragments = []
        message = data.decode("utf-8", "replace") if self._fragment_text else data
        if self._handler is not None:
            _deliver(self._handler, message)
            return
        self._early.append(message)
        self._early_bytes += len(data)
        if self._early_bytes > EARLY_LIMIT_BYTES:
            self.pause_reading("early")

    def _on_pong(self, payload: bytes) -> None:
        if self._ping is not None and self._ping[0] == payload:
            self._ping = None


def _deliver(handler: FrameHandler, message: bytes | str) -> None:
    if isinstance(message, bytes):
        handler.on_binary(message)
    else:
        handler.on_text(message)


def _tls_context(secure: bool) -> ssl.SSLContext | None:
    return ssl.create_default_context() if secure else None


async def open_listen_socket(
    url: str,
    *,
    headers: dict[str, str],
    max_size: int,
    timeout: float,
    user_agent: str = "switchboard",
    compression: bool = True,
    read_interval: float = 0.0,
) -> ListenSocket:
    """Connect and complete the opening handshake within ``timeout``.

    ``read_interval`` > 0: once open, the socket is read at most once per interval (see
    :class:`ListenSocket`).

    Raises :class:`OSError` / :class:`TimeoutError` for network failures and
    :class:`~websockets.exceptions.InvalidHandshake` (``InvalidStatus`` for an HTTP error) like
    ``websockets.asyncio.client.connect``.
    """
    uri = parse_uri(url)
    extensions = enable_client_permessage_deflate(None) if compression else None
    protocol = ClientProtocol(uri, extensions=extensions, max_size=max_size)
    request = protocol.connect()
    for name, value in headers.items():
        request.headers[name] = value
    request.headers.setdefault("User-Agent", user_agent)
    protocol.send_request(request)
    loop = asyncio.get_running_loop()
    socket = ListenSocket(protocol, loop, read_interval=read_interval)
    try:
        async with asyncio.timeout(timeout):
            await loop.create_connection(
                lambda: socket,
                uri.host,
                uri.port,
                ssl=_tls_context(uri.secure),
                server_hostname=uri.host if uri.secure else None,
            )
            await socket.opened
    except BaseException:
        socket.abort()
        raise
    return socket


__all__ = ["ConnectionClosed", "FrameHandler", "InvalidHandshake", "ListenSocket", "open_listen_socket"]
