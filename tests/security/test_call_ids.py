"""Item 4: odd call ids are refused at the boundary, and a crashing session backs off and stops."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.listen import supervisor
from service.recordings.storage import LocalStorage, SegmentWriter
from service.simulator import CallScript
from tests.conftest import WEBHOOK_SECRET
from tests.harness import running_stack

ODD_IDS = [".", "..", "a" * 300, 'a"b', "a\r\nb", "a/b", "a b", "ünïcode"]
UUID = "7420f27a-30fd-4f49-a995-5549ae7cc00d"


def webhook(call_id: str) -> dict[str, Any]:
    return {
        "message": {
            "type": "status-update",
            "status": "in-progress",
            "timestamp": 1_760_000_000_000,
            "call": {"id": call_id, "type": "webCall", "monitor": {"listenUrl": "ws://127.0.0.1:9/listen"}},
        }
    }


@pytest.mark.parametrize("call_id", ODD_IDS, ids=repr)
async def test_an_odd_call_id_in_a_webhook_or_an_import_is_refused_and_stores_nothing(
    api: httpx.AsyncClient, call_id: str
) -> None:
    response = await api.post("/webhooks/vapi", json=webhook(call_id), headers={"X-Vapi-Secret": WEBHOOK_SECRET})
    assert response.status_code == 400, response.text
    assert response.headers["content-type"] == "application/problem+json"
    imported = await api.post("/v1/calls/import", json={"vapiCallId": call_id})
    assert imported.status_code == 400, imported.text
    assert (await api.get("/v1/calls")).json()["data"] == []


async def test_a_uuid_and_vapi_shaped_ids_are_accepted(api: httpx.AsyncClient) -> None:
    for call_id in (UUID, "call_1-x"):
        response = await api.post("/webhooks/vapi", json=webhook(call_id), headers={"X-Vapi-Secret": WEBHOOK_SECRET})
        assert response.status_code == 200, response.text
        assert (await api.get(f"/v1/calls/{call_id}")).status_code == 200


@pytest.mark.parametrize(
    "path",
    ["", "/events", "/recording", "/recording.pcm", "/recording.wav", "/firings"],
)
@pytest.mark.parametrize("call_id", ["a%22b", "a%0D%0Ab", "a" * 300, "%2E%2E", "a.b"], ids=repr)
async def test_every_call_route_refuses_an_odd_id_with_400(api: httpx.AsyncClient, path: str, call_id: str) -> None:
    response = await api.get(f"/v1/calls/{call_id}{path}")
    assert response.status_code == 400, (path, response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"


class _CrashingStorage(LocalStorage):
    """A storage with a bug: every segment open, size and read raise (a session crash, not a storage fault)."""

    async def open_writer(self, key: str) -> SegmentWriter:
        raise RuntimeError("storage bug")

    async def size(self, key: str) -> int:
        raise RuntimeError("storage bug")

    def read(self, key: str, start: int, end: int) -> AsyncIterator[bytes]:
        raise RuntimeError("storage bug")


@pytest.fixture
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervisor, "CRASH_BACKOFF_SECONDS", 0.3, raising=False)
    monkeypatch.setattr(supervisor, "CRASH_BACKOFF_CAP_SECONDS", 1.0, raising=False)


async def crash_events(client: httpx.AsyncClient, call_id: str) -> list[str]:
    events = (await client.get(f"/v1/calls/{call_id}/events", params={"limit": 500})).json()["data"]
    return [e["payload"]["reason"] for e in events if e["type"] == "listen.failed"]


async def until(predicate: Any, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.1)


async def test_a_crashing_session_backs_off_and_stops_after_the_call_ended(
    database_url: str, tmp_path: Path, fast_backoff: None
) -> None:
    script = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=6.0, turns=())
    storage = _CrashingStorage(tmp_path / "recordings")
    # Leases every 1.5 s: the maintainer looks for calls to adopt every 0.5 s (it used to restart the
    # crashed session each time, forever).
    async with running_stack(
        database_url, tmp_path, script=script, pace=2, storage=storage, listen_lease_seconds=1.5
    ) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)

        async def settled() -> bool:
            first = await crash_events(stack.client, call_id)
            await asyncio.sleep(2.5)  # more than the capped backoff and several maintainer rounds
            return first == await crash_events(stack.client, call_id)

        await until(settled)
        crashes = await crash_events(stack.client, call_id)
        assert all("session crashed: RuntimeError" in reason for reason in crashes)
        assert 2 <= len(crashes) <= 10, crashes
