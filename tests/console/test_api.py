"""The console's two API routes, on SQLite and PostgreSQL: the call change stream and the rule dry run."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness import Stack, running_stack

CANCEL = {
    "name": "cancel-offer",
    "on": "transcript",
    "if": 'event.role == "user" && event.transcript.matches("(?i)cancel")',
    "say": "Wait, {{ call.customer.name }}!",
}


@pytest.fixture
async def stack(database_url: str, tmp_path: Path) -> AsyncIterator[Stack]:
    async with running_stack(database_url, tmp_path) as running:
        yield running


async def sse_messages(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """``(event, data)`` of each server-sent event (comments skipped)."""
    kind, data = "message", []
    async for line in response.aiter_lines():
        if line.startswith("event:"):
            kind = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            data.append(line.removeprefix("data:").strip())
        elif not line and data:
            yield kind, json.loads("\n".join(data))
            kind, data = "message", []


async def test_the_stream_sends_each_call_as_it_changes(stack: Stack) -> None:
    async with stack.client.stream("GET", "/v1/console/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        messages = sse_messages(response)
        assert (await anext(messages))[0] == "ready"
        call_id = await stack.place_call()
        statuses: list[str] = []
        versions: list[str] = []
        async with asyncio.timeout(15):
            async for kind, call in messages:
                assert kind == "call"
                assert call["id"] == call_id
                assert "listenUrl" not in call["monitor"], "the feed never carries monitor URLs"
                statuses.append(call["status"])
                versions.append(call["updatedAt"])
                if call["status"] == "ended" and call["recording"]["status"] == "completed":
                    break
    assert statuses[-1] == "ended"
    assert len(versions) == len(set(versions)), "each version of the call is sent once"


async def test_the_stream_follows_one_call_and_needs_calls_read(stack: Stack) -> None:
    first = await stack.place_call()
    async with stack.client.stream("GET", "/v1/console/stream", params={"callId": first}) as response:
        messages = sse_messages(response)
        assert (await anext(messages))[0] == "ready"
        second = await stack.place_call()
        async with asyncio.timeout(10):
            kind, call = await anext(messages)
        assert (kind, call["id"]) == ("call", first)
        await stack.sim.wait_for_status(second, "in-progress")
        async with asyncio.timeout(10):
            while call["status"] != "ended":
                kind, call = await anext(messages)
                assert call["id"] == first, "only the followed call"

    _, rules_only = await stack.app.state.api_keys.create("rules-only", ["rules:read"])
    async with httpx.AsyncClient(base_url=stack.base_url) as anonymous:
        assert (await anonymous.get("/v1/console/stream")).status_code == 401
        forbidden = await anonymous.get("/v1/console/stream", headers={"Authorization": f"Bearer {rules_only}"})
        assert forbidden.status_code == 403


async def ended_call(stack: Stack) -> str:
    call_id = await stack.place_call()
    await stack.sim.wait_for_status(call_id, "ended")
    await stack.wait_for_recording(call_id)
    return call_id


async def dry_run(stack: Stack, rule: dict[str, Any], call_id: str, **headers: str) -> httpx.Response:
    return await stack.client.post("/v1/rules/dry-run", json={"rule": rule, "callId": call_id}, headers=headers)


async def test_a_dry_run_shows_what_a_rule_would_have_done(stack: Stack) -> None:
    call_id = await ended_call(stack)

    response = await dry_run(stack, CANCEL, call_id)
    assert response.status_code == 200, response.text
    result = response.json()
    assert (result["valid"], result["callId"], result["fired"]) == (True, call_id, 1)
    fired = [step for step in result["steps"] if step["wouldFire"]]
    assert fired[0]["message"] == {
        "type": "say",
        "content": "Wait, Ada!",
        "endCallAfterSpoken": False,
        "interruptAssistantEnabled": False,
        "interruptionsEnabled": True,
    }
    assert fired[0]["event"]["transcript"] == "I want to cancel my plan."
    reasons = {step["reason"] for step in result["steps"] if not step["wouldFire"]}
    assert reasons == {"the condition is false", "once: the rule has already fired on this call"}
    assert stack.sim.control_received(call_id) == [], "a dry run sends nothing"
    assert (await stack.client.get(f"/v1/calls/{call_id}/firings")).json()["data"] == [], "and stores nothing"

    every_time = await dry_run(stack, {**CANCEL, "once": False}, call_id)
    steps = every_time.json()["steps"]
    assert every_time.json()["fired"] == 1, "the webhook and listen copies of one utterance fire once"
    duplicate = "the same occurrence already fired (it arrives by webhook and listen socket)"
    assert duplicate in {step["reason"] for step in steps}

    late = await dry_run(stack, {"name": "late", "on": "call.elapsed", "at": "10m", "say": "Still there?"}, call_id)
    (step,) = late.json()["steps"]
    assert (step["wouldFire"], step["reason"]) == (False, "the call had ended before the firing was due")
    assert step["dueAt"] is not None


async def test_a_dry_run_reports_rule_errors_unknown_calls_and_scopes(stack: Stack) -> None:
    call_id = await ended_call(stack)
    invalid = await dry_run(stack, {**CANCEL, "if": "event.role =="}, call_id)
    assert invalid.status_code == 200
    body = invalid.json()
    assert (body["valid"], body["steps"]) == (False, [])
    assert [error["field"] for error in body["errors"]] == ["if"]

    assert (await dry_run(stack, CANCEL, "no-such-call")).status_code == 404
    assert (await stack.client.post("/v1/rules/dry-run", json={"rule": CANCEL})).status_code == 400

    _, rules_only = await stack.app.state.api_keys.create("rules-only", ["rules:read"])
    _, both = await stack.app.state.api_keys.create("analyst", ["rules:read", "calls:read"])
    assert (await dry_run(stack, CANCEL, call_id, Authorization=f"Bearer {rules_only}")).status_code == 403
    assert (await dry_run(stack, CANCEL, call_id, Authorization=f"Bearer {both}")).status_code == 200
