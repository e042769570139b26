"""Fixtures for the Vapi simulator's tests: a running simulator, a webhook receiver, clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import pytest
import pytest_asyncio
import websockets
from litestar import Litestar, Request, Response, post

from service.simulator import CallScript, LoopbackServer, SimulatorServer, Utterance, VapiSimulator

SECRET = "test-webhook-secret"
PACE = 20.0
SHORT_SCRIPT = CallScript(
    ring_after=0.2,
    answer_after=0.2,
    talk_seconds=4.0,
    turns=(
        Utterance("assistant", "Hello, how can I help?", at=0.1),
        Utterance("user", "I want to cancel my plan.", at=1.3),
        Utterance("user", "Thank you.", at=2.8),
    ),
)
"""A 4-second conversation: 200 audio frames, 0.2 s of real time at pace 20."""

LONG_SCRIPT = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=60.0, turns=SHORT_SCRIPT.turns)
"""Long enough (3 s real time at pace 20) to act on a live call; tests end it themselves."""

ALL_MESSAGES = [
    "status-update",
    "speech-update",
    "transcript",
    "conversation-update",
    "end-of-call-report",
    "hang",
    "model-output",
    "assistant.speechStarted",
    "transfer-update",
    "user-interrupted",
]


@dataclass
class ReceivedWebhook:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any


@dataclass
class WebhookReceiver:
    """A tiny server-URL endpoint: records every POST, answers ``status``."""

    status: int = 200
    received: list[ReceivedWebhook] = field(default_factory=list)
    url: str = ""

    def messages(self, call_id: str | None = None, message_type: str | None = None) -> list[dict[str, Any]]:
        """The ``message`` objects received, optionally for one call and type."""
        found = []
        for item in self.received:
            message = item.body["message"]
            if call_id is not None and message["call"]["id"] != call_id:
                continue
            if message_type is not None and message["type"] != message_type:
                continue
            found.append(message)
        return found

    def app(self) -> Litestar:
        """The receiver's ASGI app."""

        @post("/{path:path}", status_code=200)
        async def receive(request: Request[Any, Any, Any]) -> Response[Any]:
            raw = await request.body()
            self.received.append(
                ReceivedWebhook(request.url.path, dict(request.headers), raw, msgspec.json.decode(raw))
            )
            return Response(content={"ok": True}, status_code=self.status)

        return Litestar([receive], logging_config=None, openapi_config=None)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def receiver_server() -> AsyncIterator[WebhookReceiver]:
    """One webhook receiver for the session (starting a server per test costs more than the test)."""
    hooks = WebhookReceiver()
    async with LoopbackServer(hooks.app()) as server:
        hooks.url = f"{server.base_url}/webhooks/vapi"
        yield hooks


@pytest.fixture
def receiver(receiver_server: WebhookReceiver) -> WebhookReceiver:
    """The webhook receiver, emptied and answering 200 (``receiver.url`` is its ``/webhooks/vapi`` URL)."""
    receiver_server.received.clear()
    receiver_server.status = 200
    return receiver_server


@pytest.fixture
async def simulator(receiver: WebhookReceiver) -> AsyncIterator[SimulatorServer]:
    """A running simulator at pace 20 with a short script, posting webhooks to ``receiver``."""
    sim = VapiSimulator(server_url=receiver.url, secret=SECRET, pace=PACE, script=SHORT_SCRIPT)
    async with SimulatorServer(sim) as server:
        yield server


@pytest.fixture
async def vapi(simulator: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the simulator's REST API."""
    async with httpx.AsyncClient(base_url=simulator.base_url, timeout=5.0) as client:
        yield client


def call_body(**changes: Any) -> dict[str, Any]:
    """A valid create-call body, with top-level keys replaced by ``changes``."""
    body: dict[str, Any] = {
        "assistantId": "asst-1",
        "phoneNumberId": "pn-1",
        "customer": {"number": "+15551234567", "name": "Ada"},
        "assistantOverrides": {
            "monitorPlan": {"listenEnabled": True, "controlEnabled": True},
            "metadata": {"crmId": "crm-42"},
        },
    }
    body.update(changes)
    return body


def with_overrides(**overrides: Any) -> dict[str, Any]:
    """A create-call body whose ``assistantOverrides`` include ``overrides``."""
    body = call_body()
    body["assistantOverrides"].update(overrides)
    return body


async def place_call(client: httpx.AsyncClient, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST /call and return the Call (asserting 201)."""
    response = await client.post("/call", json=body if body is not None else call_body())
    assert response.status_code == 201, response.text
    call: dict[str, Any] = response.json()
    return call


@dataclass
class Captured:
    """What a listen client received."""

    frames: list[bytes] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    close_code: int | None = None
    clean: bool = True
    """False when the connection ended without a close frame from the server."""

    @property
    def audio(self) -> bytes:
        """The binary frames concatenated."""
        return b"".join(self.frames)


async def capture_listen(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    on_frame: Callable[[int], None] | None = None,
    timeout: float = 10.0,
) -> Captured:
    """Connect to a listen URL and collect everything until the server closes."""
    captured = Captured()
    async with asyncio.timeout(timeout), websockets.connect(url, additional_headers=headers) as socket:
        try:
            async for message in socket:
                if isinstance(message, bytes):
                    captured.frames.append(message)
                    if on_frame is not None:
                        on_frame(len(captured.frames))
                else:
                    captured.texts.append(message)
        except websockets.ConnectionClosedError:
            pass
        captured.close_code = socket.close_code
        captured.clean = socket.protocol.close_rcvd is not None
    return captured


def stall(seconds: float) -> None:
    """Block the event loop, as a busy machine does (the simulator then runs late)."""
    time.sleep(seconds)
