"""``WS /v1/calls/{id}/listen``: live fan-out of a call's listen-socket frames, from the one upstream
connection this replica already holds for recording."""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect

from service.auth import scoped, until_revoked
from service.calls.ids import CallIdPath
from service.listen.supervisor import ListenSupervisor

# Close codes in the private range (4000-4999), echoing HTTP where one fits.
CLOSE_NOT_RECORDED_HERE = 4404
CLOSE_TOO_SLOW = 4408
CLOSE_REVOKED = 4401


@websocket(
    "/v1/calls/{call_id:str}/listen",
    **scoped("recordings:read"),
    name="listenLive",
    description=(
        "Live audio and events of a call: the same binary (PCM) and text (JSON) frames as Vapi's listen "
        "socket. API key in the Authorization header or ?token=. A listener that falls more than ~2 s "
        f"behind is closed with {CLOSE_TOO_SLOW}; a call not recorded by this replica is closed with "
        f"{CLOSE_NOT_RECORDED_HERE}. A revoked key's socket is closed within seconds with {CLOSE_REVOKED}."
    ),
)
async def live_listen(
    socket: WebSocket[Any, Any, Any], call_id: CallIdPath, supervisor: NamedDependency[ListenSupervisor]
) -> None:
    await socket.accept()
    relay = supervisor.relay(call_id)
    if relay is None:
        await socket.close(code=CLOSE_NOT_RECORDED_HERE, reason="call is not live or not recorded by this replica")
        return
    subscription = relay.subscribe()
    revoked = asyncio.create_task(until_revoked(socket), name=f"listen-key-watch:{call_id}")
    revoked.add_done_callback(lambda _: subscription.end())
    try:
        while (frame := await subscription.next()) is not None:
            if isinstance(frame, bytes):
                await socket.send_bytes(frame)
            else:
                await socket.send_text(frame)
    except WebSocketDisconnect:
        return
    finally:
        subscription.close()
        if not revoked.done():
            revoked.cancel()
    if revoked.done() and not revoked.cancelled():
        await socket.close(code=CLOSE_REVOKED, reason="API key revoked")
    elif subscription.dropped:
        await socket.close(code=CLOSE_TOO_SLOW, reason="listener too slow; reconnect")
    else:
        await socket.close(code=1000, reason="call ended")
