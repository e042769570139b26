"""Live fan-out: listeners get the call's frames from Switchboard, recording stays byte-exact."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from service.listen.relay import QUEUE_FRAMES, LiveRelay
from service.simulator import CallScript
from tests.conftest import ADMIN_KEY
from tests.harness import running_stack

SCRIPT = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=6.0, turns=())


async def listen(url: str, headers: dict[str, str] | None = None) -> tuple[bytes, int | None]:
    """Everything a fan-out listener receives, and the close code."""
    received = bytearray()
    async with connect(url, additional_headers=headers or {}) as socket:
        try:
            async for message in socket:
                if isinstance(message, bytes):
                    received += message
        except ConnectionClosed:
            pass
        return bytes(received), socket.close_code


async def test_two_listeners_hear_the_call_while_it_is_recorded(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=3) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "in-progress")
        ws_base = stack.base_url.replace("http://", "ws://")
        url = f"{ws_base}/v1/calls/{call_id}/listen"
        first, second = await asyncio.gather(
            listen(url, {"Authorization": f"Bearer {ADMIN_KEY}"}), listen(f"{url}?token={ADMIN_KEY}")
        )
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        await stack.wait_for_recording(call_id)
        pcm = await stack.pcm(call_id)
        assert pcm == stack.sim.audio_sent(call_id), "recording stays byte-exact"
        assert len(stack.sim.audio_sent_per_connection(call_id)) == 1, "one upstream connection"
        for received, code in (first, second):
            assert len(received) > 50_000
            assert received in pcm, "a listener hears a contiguous stretch of the call"
            assert code == 1000


async def test_listening_needs_a_key(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=3) as stack:
        call_id = await stack.place_call()
        url = stack.base_url.replace("http://", "ws://") + f"/v1/calls/{call_id}/listen"
        with pytest.raises((InvalidStatus, ConnectionClosed)):
            await listen(url + "?token=wrong")
        _, code = await listen(stack.base_url.replace("http://", "ws://") + f"/v1/calls/nope/listen?token={ADMIN_KEY}")
        assert code == 4404


def test_a_slow_listener_is_dropped_without_slowing_others() -> None:
    async def scenario() -> None:
        relay = LiveRelay()
        slow, fast = relay.subscribe(), relay.subscribe()
        for index in range(QUEUE_FRAMES + 5):
            relay.publish(bytes([index % 256]))
            await fast.queue.get()
        assert slow.dropped
        assert await slow.next() is None
        assert not fast.dropped
        assert len(relay) == 1
        relay.close()
        assert await fast.next() is None

    asyncio.run(scenario())
