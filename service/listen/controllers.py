"""``WS /v1/calls/{id}/listen``: live fan-out of a call's listen-socket frames, from the one upstream
connection this replica already holds for recording."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from litestar import WebSocket, websocket
from litestar.di import NamedDependency
from litestar.exceptions import WebSocketDisconnect

from service.auth import scoped, until_revoked
from service.calls import status as call_status
from service.calls.ids import CallIdPath
from service.calls.service import CallService
from service.errors import NotFoundError
from service.listen.sharing import LiveSharing
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
        f"behind is closed with {CLOSE_TOO_SLOW}. Any replica serves any live call when replicas share "
        f"Redis (SWITCHBOARD_REDIS_URL); a call that is not live (or, without Redis, not recorded by this "
        f"replica) is closed with {CLOSE_NOT_RECORDED_HERE}. A revoked key's socket is closed within seconds "
        f"with {CLOSE_REVOKED}."
    ),
)
async def live_listen(
    socket: WebSocket[Any, Any, Any],
    call_id: CallIdPath,
    supervisor: NamedDependency[ListenSupervisor],
    sharing: NamedDependency[LiveSharing],
    calls: NamedDependency[CallService],
) -> None:
    await socket.accept()
    relay = supervisor.relay(call_id)
    if relay is None:
        await _listen_elsewhere(socket, call_id, sharing, calls)
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


async def _listen_elsewhere(
    socket: WebSocket[Any, Any, Any], call_id: str, sharing: LiveSharing, calls: CallService
) -> None:
    """A call this replica does not record: relayed from the replica that does (shared through Redis)."""
    live = False
    if sharing.shared:
        with contextlib.suppress(NotFoundError):
            live = call_status.is_live((await calls.get_call(call_id)).status)
    if not live:
        await socket.close(code=CLOSE_NOT_RECORDED_HERE, reason="call is not live or not recorded by this replica")
        return
    listening = asyncio.ensure_future(sharing.listen_remote(call_id, socket.send_bytes, socket.send_text))
    revoked = asyncio.ensure_future(until_revoked(socket))
    try:
        await asyncio.wait((listening, revoked), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (listening, revoked):
            task.cancel()
        await asyncio.gather(listening, revoked, return_exceptions=True)
    if revoked.done() and not revoked.cancelled():
        await socket.close(code=CLOSE_REVOKED, reason="API key revoked")
        return
    if listening.cancelled() or isinstance(listening.exception(), WebSocketDisconnect):
        return
    outcome = listening.result()
    if outcome == "slow":
        await socket.close(code=CLOSE_TOO_SLOW, reason="listener too slow; reconnect")
    elif outcome == "silent":
        await socket.close(code=CLOSE_NOT_RECORDED_HERE, reason="no replica is recording the call")
    else:
        await socket.close(code=1000, reason="call ended")
