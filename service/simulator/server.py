"""Serving the simulator: in-process on loopback for tests (``SimulatorServer``), or as a process (CLI)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
import sys
from collections.abc import Iterator
from types import TracebackType
from typing import Any, Literal, Self

import uvicorn

from service.simulator.app import build_app
from service.simulator.simulator import VapiSimulator


class _HandshakeDenialFilter(logging.Filter):
    """Drop uvicorn's spurious error after a WebSocket handshake denied with an HTTP response.

    uvicorn's sans-io protocol (0.54) does not count a ``websocket.http.response`` denial as a completed
    handshake and logs "ASGI callable returned without completing handshake." for every refused listen
    attempt, although the client got the intended status. The listen endpoint always accepts or denies.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing handshake."


def _quiet_handshake_denials() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HandshakeDenialFilter) for f in logger.filters):
        logger.addFilter(_HandshakeDenialFilter())


class _HostedUvicorn(uvicorn.Server):
    """A uvicorn server that leaves signal handling to whoever hosts it (a test, another server)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0: a free port chosen by the OS)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP explicitly: asyncio enables TCP_NODELAY only on sockets whose proto says TCP, and accepted
    # sockets inherit it. With proto 0, Nagle + delayed ACK add ~40 ms to every keep-alive response.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def _config(app: Any, *, lifespan: Literal["on", "off"], log_level: str) -> uvicorn.Config:
    _quiet_handshake_denials()
    return uvicorn.Config(
        app,
        lifespan=lifespan,
        ws="websockets-sansio",
        log_config=None,  # leave the host process's logging configuration alone
        log_level=log_level,
        access_log=False,
        timeout_graceful_shutdown=2,
    )


class LoopbackServer:
    """Serves an ASGI app with uvicorn inside the running event loop, on a socket bound before start.

    Uses uvicorn's ``startup``/``shutdown`` directly rather than ``serve``: no polling main loop (exit is
    immediate) and no signal handlers taken from the host. Usable for any small ASGI app a test needs.
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning") -> None:
        self._app = app
        self._host = host
        self._port = port
        self._log_level = log_level
        self._socket: socket.socket | None = None
        self._server: _HostedUvicorn | None = None

    @property
    def port(self) -> int:
        """The bound port."""
        if self._socket is None:
            raise RuntimeError("server not started")
        return int(self._socket.getsockname()[1])

    @property
    def base_url(self) -> str:
        """``http://host:port``."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> Self:
        self._socket = bind_socket(self._host, self._port)
        config = _config(self._app, lifespan="off", log_level=self._log_level)
        config.load()
        server = _HostedUvicorn(config)
        server.lifespan = config.lifespan_class(config)  # what Server.serve() sets up before startup()
        try:
            await server.startup(sockets=[self._socket])
        except BaseException:
            self._socket.close()
            raise
        self._server = server
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        server, sock = self._server, self._socket
        self._server = None
        if server is not None and sock is not None:
            await server.shutdown(sockets=[sock])  # closes the socket, waits for connections and tasks
        elif sock is not None:
            sock.close()


class SimulatorServer:
    """A running simulator on loopback: ``async with SimulatorServer(VapiSimulator(pace=20)) as server``.

    Exposes ``base_url`` and ``sim``. On exit it stops the simulator (calls cancelled, listen sockets
    closed, webhooks flushed briefly, HTTP client closed, every task awaited), then the server.
    """

    def __init__(self, sim: VapiSimulator | None = None, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.sim = sim if sim is not None else VapiSimulator()
        self._server = LoopbackServer(build_app(self.sim), host=host, port=port)
        self._stack = contextlib.AsyncExitStack()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT``: Vapi's REST base for the code under test."""
        return self._server.base_url

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self._server)
            self.sim.base_url = self._server.base_url
            await stack.enter_async_context(self.sim)  # exits first: simulator down before the server
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stack.aclose()


def run_simulator(
    *,
    host: str = "127.0.0.1",
    port: int = 8900,
    server_url: str | None = None,
    secret: str | None = None,
    pace: float = 1.0,
    talk_seconds: float | None = None,
    api_key: str | None = None,
    public_key: str | None = None,
    hmac_secret: str | None = None,
    keep_audio: bool = False,
    log_level: str = "warning",
) -> None:
    """Run the simulator until interrupted (Ctrl-C). Prints its base URL on standard error.

    ``keep_audio`` defaults to False here: a long-running simulator keeps only counts and SHA-256 of the
    audio it sends, so that its memory stays flat.
    """
    sim = VapiSimulator(
        server_url=server_url,
        secret=secret,
        api_key=api_key,
        public_key=public_key,
        pace=pace,
        keep_audio=keep_audio,
        hmac_secret=hmac_secret,
    )
    if talk_seconds is not None:
        sim.script = dataclasses.replace(sim.script, talk_seconds=talk_seconds)
    sock = bind_socket(host, port)
    bound_port = int(sock.getsockname()[1])
    shown_host = f"[{host}]" if ":" in host else host
    base_url = f"http://{shown_host}:{bound_port}"
    # A wildcard address is no URL to give clients: then monitor URLs follow each request's Host header.
    sim.base_url = None if host in ("0.0.0.0", "::") else base_url  # noqa: S104 - a comparison, not a bind
    print(f"Vapi simulator listening on {base_url}", file=sys.stderr, flush=True)
    server = uvicorn.Server(_config(build_app(sim), lifespan="on", log_level=log_level))
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=[sock])
