"""Item 6: a rule firing queues its ``rule.fired`` outbound webhook in the firing's own transaction."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from standardwebhooks import Webhook

from service.simulator import CallScript
from tests.deliveries.conftest import Receiver
from tests.harness import running_stack
from tests.servers import bind_loopback, serve

SCRIPT = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=3.0, turns=())


@pytest.fixture
async def crm() -> AsyncIterator[tuple[Receiver, str]]:
    receiver = Receiver()
    async with serve(receiver, bind_loopback()) as url:
        yield receiver, url + "/hooks"


async def test_a_fired_rule_reaches_a_subscribed_endpoint(
    database_url: str, tmp_path: Path, crm: tuple[Receiver, str]
) -> None:
    receiver, url = crm
    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=3, webhook_allow_private=True) as stack:
        endpoint = await stack.client.post("/v1/webhook-endpoints", json={"url": url, "events": ["rule.fired"]})
        assert endpoint.status_code == 201, endpoint.text
        rule = {"name": "greet", "on": "call.answered", "say": "Hello {{ call.customer.name }}"}
        assert (await stack.client.post("/v1/rules", json=rule)).status_code == 201
        call_id = await stack.place_call()
        async with asyncio.timeout(20):
            while not receiver.requests:
                await asyncio.sleep(0.05)
        firings = (await stack.client.get(f"/v1/calls/{call_id}/firings")).json()["data"]

    [request] = receiver.requests
    payload = Webhook(endpoint.json()["secret"]).verify(request.body, request.headers)
    assert payload["type"] == "rule.fired"
    data = payload["data"]
    [firing] = firings
    assert firing["status"] == "fired"
    assert data["callId"] == call_id
    assert data["rule"] == "greet"
    assert data["firingId"] == firing["id"]
    assert data["injectionId"] == firing["injectionId"]
    assert data["milestone"] == "call.answered"
    assert "Hello" not in json.dumps(data), "the spoken text stays in the timeline, not in webhooks"
