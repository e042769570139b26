"""The whole stack for end-to-end tests: the Vapi simulator and Switchboard, both on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from litestar import Litestar

from service.app import create_app
from service.recordings.storage import RecordingStorage
from service.simulator import CallScript, SimulatorServer, Utterance, VapiSimulator
from tests.conftest import ADMIN_KEY, VAPI_KEY, make_settings
from tests.servers import bind_loopback, serve, url_of

CALL = {
    "assistantId": "asst-e2e",
    "phoneNumberId": "pn-e2e",
    "customer": {"number": "+14155550123", "name": "Ada"},
    "metadata": {"crmId": "crm-7"},
}
SHORT_SCRIPT = CallScript(
    ring_after=0.5,
    answer_after=0.5,
    talk_seconds=8.0,
    turns=(
        Utterance("assistant", "Hello, how can I help?", at=0.2),
        Utterance("user", "I want to cancel my plan.", at=2.0),
    ),
)


@dataclass
class Stack:
    client: httpx.AsyncClient
    sim: VapiSimulator
    app: Litestar

    async def place_call(self, **overrides: Any) -> str:
        response = await self.client.post("/v1/calls", json={**CALL, **overrides})
        assert response.status_code == 201, response.text
        call_id: str = response.json()["id"]
        return call_id

    @property
    def base_url(self) -> str:
        return str(self.client.base_url)

    async def events(self, call_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/v1/calls/{call_id}/events", params={"limit": 500})
        data: list[dict[str, Any]] = response.json()["data"]
        return data

    async def pcm(self, call_id: str) -> bytes:
        return (await self.client.get(f"/v1/calls/{call_id}/recording.pcm")).content

    async def wait_for_recording(self, call_id: str, timeout: float = 20) -> dict[str, Any]:
        """The recording once finalised (completed, partial or failed)."""
        async with asyncio.timeout(timeout):
            while True:
                response = await self.client.get(f"/v1/calls/{call_id}/recording")
                body: dict[str, Any] = response.json()
                if response.status_code == 200 and body["status"] in ("completed", "partial", "failed"):
                    return body
                await asyncio.sleep(0.05)


@asynccontextmanager
async def running_switchboard(
    database_url: str,
    tmp_path: Path,
    simulator: SimulatorServer,
    *,
    storage: RecordingStorage | None = None,
    **settings: Any,
) -> AsyncIterator[Stack]:
    """Switchboard on loopback, pointed at ``simulator``; recordings under ``tmp_path``."""
    sock = bind_loopback()
    app = create_app(
        make_settings(
            database_url,
            storage_url=f"file://{tmp_path / 'recordings'}",
            vapi_base_url=simulator.base_url,
            public_url=url_of(sock),
            **settings,
        ),
        storage=storage,
    )
    async with (
        serve(app, sock) as base_url,
        httpx.AsyncClient(base_url=base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client,
    ):
        yield Stack(client, simulator.sim, app)


@asynccontextmanager
async def running_stack(
    database_url: str,
    tmp_path: Path,
    *,
    script: CallScript = SHORT_SCRIPT,
    pace: float = 8,
    storage: RecordingStorage | None = None,
    **settings: Any,
) -> AsyncIterator[Stack]:
    """The simulator and Switchboard, both on loopback."""
    async with (
        SimulatorServer(VapiSimulator(api_key=VAPI_KEY, pace=pace, script=script)) as simulator,
        running_switchboard(database_url, tmp_path, simulator, storage=storage, **settings) as stack,
    ):
        yield stack
