"""What tests build on: Switchboard as an app under test (in process or served on loopback), the whole
stack with the Vapi simulator, and ``eventually`` for what happens in the background."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, overload

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.recordings.storage import RecordingStorage
from service.simulator import CallScript, SimulatorServer, Utterance, VapiSimulator
from tests.conftest import ADMIN_KEY, VAPI_KEY, make_settings
from tests.servers import bind_loopback, serve, url_of

T = TypeVar("T")

FINAL_RECORDING = ("completed", "partial", "failed")
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


@overload
async def eventually(
    predicate: Callable[[], Awaitable[T | None]], timeout: float = 10, *, interval: float = 0.02, what: str = ""
) -> T: ...


@overload
async def eventually(
    predicate: Callable[[], T | None], timeout: float = 10, *, interval: float = 0.02, what: str = ""
) -> T: ...


async def eventually(
    predicate: Callable[[], Any], timeout: float = 10, *, interval: float = 0.02, what: str = ""
) -> Any:
    """Poll ``predicate`` (plain or async) until it returns something truthy, and return that.

    Fails the test with ``what`` (or the predicate's name) after ``timeout`` seconds, however long a
    single call of the predicate takes. Errors the predicate raises are not retried: they fail at once.
    """
    try:
        async with asyncio.timeout(timeout):
            while True:
                result = predicate()
                value = await result if inspect.isawaitable(result) else result
                if value:
                    return value
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"still not true after {timeout} s: {what or predicate.__name__}") from None


def build_app(
    database_url: str,
    *,
    storage: RecordingStorage | None = None,
    http_client: httpx.AsyncClient | None = None,
    **settings: Any,
) -> Litestar:
    """Switchboard as tests build it: the test settings (``make_settings``) with ``settings`` on top."""
    return create_app(make_settings(database_url, **settings), storage=storage, http_client=http_client)


@asynccontextmanager
async def app_client(
    app: Litestar, *, key: str | None = ADMIN_KEY, **kwargs: Any
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """An in-process client of ``app`` (lifespan run), signed in with ``key`` (the admin key by default)."""
    async with AsyncTestClient(app, **kwargs) as client:
        if key is not None:
            client.headers["Authorization"] = f"Bearer {key}"
        yield client


@dataclass
class Served:
    app: Litestar
    base_url: str


@asynccontextmanager
async def served_app(
    database_url: str,
    *,
    storage: RecordingStorage | None = None,
    http_client: httpx.AsyncClient | None = None,
    **settings: Any,
) -> AsyncIterator[Served]:
    """``build_app`` served by uvicorn on a free loopback port, its ``public_url`` pointing there."""
    sock = bind_loopback()
    settings.setdefault("public_url", url_of(sock))
    app = build_app(database_url, storage=storage, http_client=http_client, **settings)
    async with serve(app, sock) as base_url:
        yield Served(app, base_url)


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

        async def final() -> dict[str, Any] | None:
            response = await self.client.get(f"/v1/calls/{call_id}/recording")
            body: dict[str, Any] = response.json()
            return body if response.status_code == 200 and body["status"] in FINAL_RECORDING else None

        return await eventually(final, timeout, interval=0.05, what=f"the recording of {call_id} is final")


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
    settings.setdefault("storage_url", f"file://{tmp_path / 'recordings'}")
    async with (
        served_app(database_url, storage=storage, vapi_base_url=simulator.base_url, **settings) as served,
        httpx.AsyncClient(base_url=served.base_url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}) as client,
    ):
        yield Stack(client, simulator.sim, served.app)


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
