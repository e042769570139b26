"""Live frames shared between replicas, so that a listener on any replica hears any live call.

Each live call is recorded by one replica, which holds its upstream listen socket and relays its frames
to local listeners (:class:`~service.listen.relay.LiveRelay`). A listener that reaches another replica
asks for the call on the ``switchboard:listen-wanted`` channel, again every ``WANTED_EVERY_SECONDS``
while it listens; the recording replica, hearing it, subscribes a *bridge* to the call's relay, which
republishes every frame on ``switchboard:frames:<call id>`` until nobody has asked for
``BRIDGE_IDLE_SECONDS`` or the call ends. Frames cross Redis pub/sub (``SWITCHBOARD_REDIS_URL``), through
Litestar's channels; with no Redis there is one process and nothing to share.

The recording path pays nothing for this: a bridge is one more subscriber of the relay, and only
while somebody listens elsewhere. Frames are tagged by their first byte: ``B`` binary (PCM), ``T``
text (JSON, UTF-8), ``E`` the call ended, ``S`` the bridge fell behind (the listener should reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Literal

import structlog
from litestar.channels import ChannelsPlugin
from litestar.channels.subscriber import Subscriber

from service.listen.relay import QUEUE_FRAMES, LiveRelay
from service.tasks import TaskOwner

log = structlog.get_logger(__name__)

WANTED_CHANNEL = "switchboard:listen-wanted"
WANTED_EVERY_SECONDS = 2.0
BRIDGE_IDLE_SECONDS = 3 * WANTED_EVERY_SECONDS
FIRST_FRAME_SECONDS = 5.0  # a remote listener that hears nothing this long gives up (nobody records it)
BINARY, TEXT, ENDED, SLOW = b"B", b"T", b"E", b"S"
RemoteOutcome = Literal["ended", "slow", "silent"]


def frames_channel(call_id: str) -> str:
    return f"switchboard:frames:{call_id}"


class LiveSharing:
    """Bridges this replica's relays to listeners on other replicas (see the module docstring)."""

    def __init__(self, channels: ChannelsPlugin, relays: Callable[[str], LiveRelay | None], *, shared: bool) -> None:
        """``relays(call_id)``: the relay of a call this replica records (None if it does not);
        ``shared``: whether other replicas can be reached (a Redis backend)."""
        self._channels = channels
        self._relays = relays
        self.shared = shared
        self._wanted_at: dict[str, float] = {}
        self._subscriber: Subscriber | None = None
        self._listening = TaskOwner("live-wanted")
        self._bridges = TaskOwner("live-bridge")

    async def start(self) -> None:
        if not self.shared:
            return
        self._subscriber = await self._channels.subscribe([WANTED_CHANNEL])
        self._listening.spawn(self._serve_wanted(self._subscriber), name="wanted")

    async def close(self, timeout: float) -> None:
        await self._listening.close()
        await self._bridges.close()
        if self._subscriber is not None:
            with contextlib.suppress(Exception):  # the channels may already be down
                await self._channels.unsubscribe(self._subscriber)

    # -- the recording replica ---------------------------------------------------------------------

    async def _serve_wanted(self, subscriber: Subscriber) -> None:
        async for message in subscriber.iter_events():
            call_id = message.decode(errors="replace")
            self._wanted_at[call_id] = time.monotonic()
            if call_id in self._bridges:
                continue
            relay = self._relays(call_id)
            if relay is not None:
                self._bridges.spawn(self._bridge(call_id, relay), name=call_id, key=call_id)

    async def _bridge(self, call_id: str, relay: LiveRelay) -> None:
        """Republish the call's frames while somebody elsewhere wants them."""
        channel = frames_channel(call_id)
        subscription = relay.subscribe()
        log.info("live frames shared with another replica", call_id=call_id)
        try:
            while time.monotonic() - self._wanted_at.get(call_id, 0.0) < BRIDGE_IDLE_SECONDS:
                try:
                    async with asyncio.timeout(WANTED_EVERY_SECONDS):
                        frame = await subscription.next()
                except TimeoutError:
                    continue
                if frame is None:
                    self._channels.publish(SLOW if subscription.dropped else ENDED, channel)
                    return
                self._channels.publish(BINARY + frame if isinstance(frame, bytes) else TEXT + frame.encode(), channel)
        finally:
            subscription.close()
            self._wanted_at.pop(call_id, None)

    # -- a listener's replica ----------------------------------------------------------------------

    async def listen_remote(
        self,
        call_id: str,
        send_bytes: Callable[[bytes], Awaitable[None]],
        send_text: Callable[[str], Awaitable[None]],
    ) -> RemoteOutcome:
        """Relay the frames of a call recorded by another replica to one listener, until the call ends
        (``ended``), the listener falls behind (``slow``) or nobody sends anything (``silent``)."""
        inbox: asyncio.Queue[bytes | None] = asyncio.Queue(QUEUE_FRAMES)

        async def receive(message: bytes) -> None:
            try:
                inbox.put_nowait(message)
            except asyncio.QueueFull:
                with contextlib.suppress(asyncio.QueueEmpty):
                    inbox.get_nowait()
                inbox.put_nowait(SLOW)

        async def ask() -> None:
            while True:
                await self._channels.wait_published(call_id, WANTED_CHANNEL)
                await asyncio.sleep(WANTED_EVERY_SECONDS)

        asking = TaskOwner("live-ask")
        async with (
            self._channels.start_subscription([frames_channel(call_id)]) as subscriber,
            subscriber.run_in_background(receive, join=False),
        ):
            asking.spawn(ask(), name=call_id)
            try:
                timeout = FIRST_FRAME_SECONDS
                while True:
                    try:
                        async with asyncio.timeout(timeout):
                            message = await inbox.get()
                    except TimeoutError:
                        return "silent"
                    timeout = BRIDGE_IDLE_SECONDS  # a live call sends 50 frames a second
                    if message is None or message == ENDED:
                        return "ended"
                    if message == SLOW:
                        return "slow"
                    if message[:1] == BINARY:
                        await send_bytes(message[1:])
                    elif message[:1] == TEXT:
                        await send_text(message[1:].decode(errors="replace"))
            finally:
                await asking.close()
