"""A call's life reaches a CRM's webhook endpoint: created, status changes, ended, reported, recording completed."""

from __future__ import annotations

import json
from pathlib import Path

from standardwebhooks import Webhook

from service.simulator import CallScript
from tests.deliveries.conftest import Receiver
from tests.harness import eventually, running_stack

SCRIPT = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=3.0, turns=())


async def test_call_lifecycle_events_are_delivered_signed(
    database_url: str, tmp_path: Path, receiver: Receiver, receiver_url: str
) -> None:
    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=3, webhook_allow_private=True) as stack:
        created = await stack.client.post(
            "/v1/webhook-endpoints",
            json={
                "url": receiver_url,
                "events": ["call.created", "call.status_changed", "call.ended", "call.report", "recording.completed"],
            },
        )
        assert created.status_code == 201, created.text
        secret = created.json()["secret"]
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        await stack.wait_for_recording(call_id)
        await eventually(
            lambda: any(json.loads(r.body)["type"] == "recording.completed" for r in receiver.requests),
            15,
            what="recording.completed was delivered",
        )

    verifier = Webhook(secret)
    events = []
    for request in receiver.requests:
        payload = verifier.verify(request.body, request.headers)
        events.append((payload["type"], payload["data"]))
    types = [kind for kind, _ in events]
    assert types[0] == "call.created"
    assert types.count("call.ended") == 1
    # call.report follows the end-of-call report, after call.ended, with Vapi's figures (contract section 10).
    assert types.count("call.report") == 1
    assert types.index("call.report") > types.index("call.ended")
    report = next(data for kind, data in events if kind == "call.report")
    assert report["id"] == call_id
    assert report["cost"] > 0
    assert report["costs"]
    assert report["summary"]
    assert report["analysis"]["summary"] == report["summary"]
    assert report["structuredOutputs"]
    assert report["endedReason"]
    assert report["phoneCallProviderId"]
    assert types.count("recording.completed") == 1
    statuses = [data["status"] for kind, data in events if kind == "call.status_changed"]
    assert "in-progress" in statuses
    assert statuses[-1] == "ended"
    created_data = events[0][1]
    assert created_data["id"] == call_id
    assert created_data["metadata"] == {"crmId": "crm-7"}
    assert "monitor" not in json.dumps(events), "capabilities never leave in webhooks"
    recording = next(data for kind, data in events if kind == "recording.completed")
    assert recording["callId"] == call_id
    assert recording["status"] == "completed"
    assert recording["bytes"] > 0
