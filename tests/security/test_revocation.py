"""Item 5: revoking a key ends the streams it opened within seconds (listen WebSocket, console SSE)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.apikeys.service import ApiKeyService
from service.db.engine import Database
from service.simulator import CallScript
from tests.harness import running_stack

LONG_CALL = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=60.0, turns=())


async def new_key(database_url: str, *scopes: str) -> tuple[str, str]:
    """A stored key with ``scopes``: (its id, the key)."""
    db = Database(database_url)
    try:
        row, key = await ApiKeyService(db, admin_key=None).create("streamer", list(scopes))
    finally:
        await db.dispose()
    return str(row.id), key


async def revoke(database_url: str, key_id: str) -> None:
    """Revoke as the CLI does: straight in the database, from outside the serving process's code path."""
    db = Database(database_url)
    try:
        await ApiKeyService(db, admin_key=None).revoke(key_id)
    finally:
        await db.dispose()


async def test_revoking_a_key_closes_its_listen_socket(database_url: str, tmp_path: Path) -> None:
    key_id, key = await new_key(database_url, "recordings:read")
    async with running_stack(database_url, tmp_path, script=LONG_CALL, pace=1) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "in-progress")
        url = stack.base_url.replace("http://", "ws://") + f"/v1/calls/{call_id}/listen"
        async with connect(url, additional_headers={"Authorization": f"Bearer {key}"}) as socket:
            assert isinstance(await asyncio.wait_for(socket.recv(), 10), bytes | str), "streaming"
            await revoke(database_url, key_id)
            revoked_at = time.monotonic()
            async with asyncio.timeout(6):
                try:
                    async for _ in socket:
                        pass
                except ConnectionClosed:
                    pass
            assert socket.close_code == 4401
            assert time.monotonic() - revoked_at < 5
        await stack.client.post(f"/v1/calls/{call_id}/control", json={"type": "end-call"})


async def test_revoking_a_key_ends_its_console_stream(database_url: str, tmp_path: Path) -> None:
    key_id, key = await new_key(database_url, "calls:read")
    async with running_stack(database_url, tmp_path, script=LONG_CALL, pace=1) as stack:
        headers = {"Authorization": f"Bearer {key}"}
        async with stack.client.stream("GET", "/v1/console/stream", headers=headers) as response:
            assert response.status_code == 200
            lines = response.aiter_lines()
            assert await anext(lines) == "event: ready"
            await revoke(database_url, key_id)
            revoked_at = time.monotonic()
            seen: list[str] = []
            async with asyncio.timeout(6):
                async for line in lines:  # the stream ends (the server closes it)
                    seen.append(line)
            assert "event: revoked" in seen
            assert time.monotonic() - revoked_at < 5
        assert (await stack.client.get("/v1/console/stream", headers=headers)).status_code == 401
