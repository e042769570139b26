"""DELETE /v1/calls/{id}: a real call (simulator, listen socket, say, rule, outbound webhooks) erased
everywhere, on both databases and both storage backends; refusals; an interrupted erasure finished."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.apikeys.service import ApiKeyService
from service.recordings.storage import RecordingStorage, StorageError
from service.simulator import CallScript, Utterance
from tests.conftest import WEBHOOK_SECRET
from tests.harness import CALL, Stack, running_stack
from tests.lifecycle.conftest import rows_of, storage_at

SCRIPT = CallScript(
    ring_after=0.1,
    answer_after=0.1,
    talk_seconds=3.0,
    turns=(Utterance("user", "I want to cancel.", at=0.5),),
)
RULE = {"name": "greet", "on": "call.answered", "say": "This call is recorded."}


async def _recorded_call(stack: Stack) -> str:
    """A finished call with a recording, a say injection, a rule firing, an idempotency record and
    outbound deliveries about it."""
    client = stack.client
    endpoint = await client.post(
        "/v1/webhook-endpoints",
        json={"url": "http://127.0.0.1:9/hooks", "events": ["call.created", "call.ended", "recording.completed"]},
    )
    assert endpoint.status_code == 201, endpoint.text
    assert (await client.post("/v1/rules", json=RULE)).status_code == 201
    created = await client.post("/v1/calls", json=CALL, headers={"Idempotency-Key": "create-1"})
    assert created.status_code == 201, created.text
    call_id: str = created.json()["id"]
    await stack.sim.wait_for_status(call_id, "in-progress")
    said = await client.post(f"/v1/calls/{call_id}/say", json={"content": "hi"}, headers={"Idempotency-Key": "say-1"})
    assert said.status_code == 202, said.text
    await stack.sim.wait_for_status(call_id, "ended", timeout=30)
    await stack.wait_for_recording(call_id)
    return call_id


@pytest.fixture
async def stack(database_url: str, storage_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(
        database_url, tmp_path, script=SCRIPT, pace=3, storage=storage_at(storage_url), webhook_allow_private=True
    ) as running:
        yield running


async def test_delete_erases_the_call_everywhere(stack: Stack, database_url: str, storage_url: str) -> None:
    client, storage = stack.client, storage_at(storage_url)  # a second client of the same store, to list it
    call_id = await _recorded_call(stack)
    before = await rows_of(database_url, call_id)
    owned = ("call", "call_event", "call_metadata", "recording", "recording_segment", "injection", "rule_firing")
    assert all(before[name] for name in (*owned, "idempotency_record", "webhook_delivery")), before
    assert await storage.keys(call_id), "the recording is in storage"

    deleted = await client.delete(f"/v1/calls/{call_id}")
    assert deleted.status_code == 204, deleted.text

    assert await rows_of(database_url, call_id) == dict.fromkeys(before, 0)
    assert await storage.keys(call_id) == []
    assert call_id in stack.sim.deleted, "Vapi's copy was deleted too"
    for path in ("", "/events", "/recording", "/recording.pcm", "/recording.wav", "/firings"):
        response = await client.get(f"/v1/calls/{call_id}{path}")
        assert response.status_code == 404, (path, response.text)
    await storage.close()
    again = await client.delete(f"/v1/calls/{call_id}")
    assert again.status_code == 404
    assert again.headers["content-type"] == "application/problem+json"
    # Its idempotency records went with it: the same key is no longer answered with the erased call.
    retried = await client.post("/v1/calls", json=CALL, headers={"Idempotency-Key": "create-1"})
    assert retried.status_code == 201, retried.text
    assert retried.json()["id"] != call_id


async def test_an_erased_call_is_not_stored_again_by_a_late_webhook(stack: Stack, database_url: str) -> None:
    call_id = await stack.place_call()
    await stack.sim.wait_for_status(call_id, "ended", timeout=30)
    await stack.wait_for_recording(call_id)
    assert (await stack.client.delete(f"/v1/calls/{call_id}")).status_code == 204
    # Vapi delivers its end-of-call report again, late (or a retry of one that timed out).
    [report] = stack.sim.webhooks_sent(call_id, "end-of-call-report")
    late = await stack.client.post("/webhooks/vapi", json=report["body"], headers={"X-Vapi-Secret": WEBHOOK_SECRET})
    assert late.status_code == 200, late.text
    assert late.json()["stored"] is False
    assert (await stack.client.get(f"/v1/calls/{call_id}")).status_code == 404
    assert set((await rows_of(database_url, call_id)).values()) == {0}, "nothing of it stored again"
    # Nor by importing it on purpose while Vapi still has it (erased without Vapi's API key, say).
    stack.sim.deleted.discard(call_id)
    imported = await stack.client.post("/v1/calls/import", json={"vapiCallId": call_id})
    assert imported.status_code == 409, imported.text
    assert "was erased" in imported.json()["detail"]


async def test_call_deleted_is_announced_to_subscribers(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=3, webhook_allow_private=True) as stack:
        subscribed = await stack.client.post(
            "/v1/webhook-endpoints", json={"url": "http://127.0.0.1:9/hooks", "events": ["call.deleted"]}
        )
        assert subscribed.status_code == 201, subscribed.text
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        await stack.wait_for_recording(call_id)
        assert (await stack.client.delete(f"/v1/calls/{call_id}")).status_code == 204
        deliveries = (await stack.client.get(f"/v1/webhook-endpoints/{subscribed.json()['id']}/deliveries")).json()
    [delivery] = deliveries["data"]
    assert delivery["eventType"] == "call.deleted"
    assert delivery["payload"]["data"]["id"] == call_id
    assert delivery["payload"]["data"]["reason"] == "request"


async def test_live_and_held_calls_are_not_erased(database_url: str, tmp_path: Path) -> None:
    long_call = CallScript(ring_after=0.1, answer_after=0.1, talk_seconds=30.0, turns=())
    async with running_stack(database_url, tmp_path, script=long_call, pace=1) as stack:
        client = stack.client
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "in-progress")
        live = await client.delete(f"/v1/calls/{call_id}")
        assert live.status_code == 409, live.text
        assert live.headers["content-type"] == "application/problem+json"
        assert "live" in live.json()["detail"]
        await client.post(f"/v1/calls/{call_id}/end")
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        await stack.wait_for_recording(call_id)

        held = await client.put(f"/v1/calls/{call_id}/legal-hold", json={"hold": True, "reason": "dispute 12"})
        assert held.status_code == 200, held.text
        assert held.json() == {"callId": call_id, "hold": True, "reason": "dispute 12"}
        shown = (await client.get(f"/v1/calls/{call_id}")).json()
        assert (shown["legalHold"], shown["legalHoldReason"]) == (True, "dispute 12")
        refused = await client.delete(f"/v1/calls/{call_id}")
        assert refused.status_code == 409
        assert refused.json()["legalHold"] is True
        assert (await client.get(f"/v1/calls/{call_id}/recording.pcm")).status_code == 200, "nothing was lost"

        bad = await client.put(f"/v1/calls/{call_id}/legal-hold", json={"hold": "yes"})
        assert bad.status_code == 400 or bad.status_code == 422
        assert (await client.put("/v1/calls/nope/legal-hold", json={"hold": True})).status_code == 404
        released = await client.put(f"/v1/calls/{call_id}/legal-hold", json={"hold": False})
        assert released.status_code == 200
        assert (await client.delete(f"/v1/calls/{call_id}")).status_code == 204


async def test_erasure_needs_the_calls_delete_scope(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=3) as stack:
        keys: ApiKeyService = stack.app.state["api_keys"]
        _, writer = await keys.create("writer", ["calls:read", "calls:write"])
        _, eraser = await keys.create("eraser", ["calls:delete"])
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        await stack.wait_for_recording(call_id)
        async with httpx.AsyncClient(base_url=stack.base_url) as client:
            forbidden = await client.delete(f"/v1/calls/{call_id}", headers={"Authorization": f"Bearer {writer}"})
            assert forbidden.status_code == 403
            hold = await client.put(f"/v1/calls/{call_id}/legal-hold", json={"hold": True},
                                    headers={"Authorization": f"Bearer {eraser}"})  # fmt: skip
            assert hold.status_code == 403, "legal hold is for admins"
            erased = await client.delete(f"/v1/calls/{call_id}", headers={"Authorization": f"Bearer {eraser}"})
            assert erased.status_code == 204


async def test_when_vapi_fails_the_audio_goes_and_the_rest_is_finished_later(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=3) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        await stack.wait_for_recording(call_id)
        stack.sim.set_rest_fault(status=503, count=1)
        failed = await stack.client.delete(f"/v1/calls/{call_id}")
        assert failed.status_code == 503, failed.text
        assert not (tmp_path / "recordings" / call_id).exists(), "the audio went first"
        assert (await rows_of(database_url, call_id))["call"] == 1
        assert call_id not in stack.sim.deleted
        retried = await stack.client.delete(f"/v1/calls/{call_id}")
        assert retried.status_code == 204, retried.text
        assert call_id in stack.sim.deleted
        assert set((await rows_of(database_url, call_id)).values()) == {0}


class FailingDeletes:
    """The real storage, except that erasing a call's folder fails after removing one object."""

    def __init__(self, inner: RecordingStorage) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def delete_prefix(self, prefix: str) -> int:
        first = (await self.inner.keys(prefix))[:1]
        for key in first:
            await self.inner.delete(key)
        raise StorageError(f"delete {prefix}/ failed: connection reset")


async def test_an_interrupted_erasure_is_finished_after_a_restart(
    database_url: str, storage_url: str, tmp_path: Path
) -> None:
    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=3, storage=storage_at(storage_url)) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        await stack.wait_for_recording(call_id)
    # The same database and storage, served by an app whose storage fails half-way through erasing.
    async with running_stack(
        database_url,
        tmp_path,
        script=SCRIPT,
        storage=FailingDeletes(storage_at(storage_url)),
    ) as stack:
        failed = await stack.client.delete(f"/v1/calls/{call_id}")
        assert failed.status_code == 503, failed.text
        assert "sweep" in failed.json()["detail"]
        rows = await rows_of(database_url, call_id)
        assert rows["call"] == 1, "the tombstoned call waits for the sweep"
        assert rows["recording"] == 1
        held = await stack.client.put(f"/v1/calls/{call_id}/legal-hold", json={"hold": True})
        assert held.status_code == 409, "an erasure that started cannot be held back"
    # Restart: the start-up sweep finishes the erasure.
    storage = storage_at(storage_url)
    async with running_stack(database_url, tmp_path, script=SCRIPT, storage=storage) as stack:
        async with asyncio.timeout(10):
            while (await rows_of(database_url, call_id))["call"]:
                await asyncio.sleep(0.05)
        assert await rows_of(database_url, call_id) == dict.fromkeys(await rows_of(database_url, call_id), 0)
        assert await storage.keys(call_id) == []
        assert (await stack.client.get(f"/v1/calls/{call_id}")).status_code == 404
