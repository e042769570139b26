"""Live fan-out: the frames of one call, relayed to any number of listeners.

The listen session publishes every frame it receives; each listener has a bounded queue. A listener
that falls behind by more than its queue is dropped — it never slows the recording. With nobody
listening, publishing costs one truth test per frame.
"""

from __future__ import annotations

import asyncio

QUEUE_FRAMES = 100  # 2 s of 20 ms frames


class Subscription:
    def __init__(self, relay: LiveRelay) -> None:
        self._relay = relay
        self.queue: asyncio.Queue[bytes | str | None] = asyncio.Queue(QUEUE_FRAMES)
        self.dropped = False

    async def next(self) -> bytes | str | None:
        """The next frame, or None when the call ended or this listener was dropped."""
        return await self.queue.get()

    def close(self) -> None:
        self._relay.unsubscribe(self)

    def end(self) -> None:
        """Stop this listener from outside (its key was revoked): ``next()`` gives None at once."""
        self.close()
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)


class LiveRelay:
    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self.dropped = 0
        self.closed = False

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscription:
        subscription = Subscription(self)
        if self.closed:
            subscription.queue.put_nowait(None)
        else:
            self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def publish(self, frame: bytes | str) -> None:
        for subscription in tuple(self._subscribers):
            try:
                subscription.queue.put_nowait(frame)
            except asyncio.QueueFull:
                self._drop(subscription)

    def _drop(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)
        subscription.dropped = True
        self.dropped += 1
        # Make room for the end marker so the listener's handler wakes up and closes.
        while not subscription.queue.empty():
            subscription.queue.get_nowait()
        subscription.queue.put_nowait(None)

    def close(self) -> None:
        """The call ended (or this replica stopped recording it): release every listener."""
        self.closed = True
        for subscription in tuple(self._subscribers):
            self._subscribers.discard(subscription)
            try:
                subscription.queue.put_nowait(None)
            except asyncio.QueueFull:
                self._drop(subscription)
