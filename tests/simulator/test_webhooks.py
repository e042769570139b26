"""Server messages: destination, headers, subscription filtering, order, failures (never retried)."""

from __future__ import annotations

import hashlib
import hmac

import httpx

from service.simulator import SimulatorServer, VapiSimulator
from tests.simulator.conftest import SECRET, SHORT_SCRIPT, WebhookReceiver, place_call, with_overrides


async def test_default_subscription_goes_to_the_server_url_with_the_secret(
    simulator: SimulatorServer, vapi: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    call = await place_call(vapi)
    await simulator.sim.wait_idle(call["id"])
    types = [m["type"] for m in receiver.messages(call["id"])]
    assert "transcript" not in types  # not in Vapi's default subscription
    assert [m["status"] for m in receiver.messages(call["id"], "status-update")] == ["ringing", "in-progress", "ended"]
    assert types[-2:] == ["status-update", "end-of-call-report"]
    assert "speech-update" in types
    assert "conversation-update" in types
    assert all(item.headers["x-vapi-secret"] == SECRET for item in receiver.received)
    assert all(item.path == "/webhooks/vapi" for item in receiver.received)
    first = receiver.messages(call["id"])[0]
    assert first["call"]["monitor"] == call["monitor"]
    assert isinstance(first["timestamp"], int)
    assert first["timestamp"] > 1_600_000_000_000
    assert first["customer"] == call["customer"]
    report = receiver.messages(call["id"], "end-of-call-report")[0]
    assert report["endedReason"] == "customer-ended-call"
    assert report["artifact"]["transcript"].count("\n") == 3
    assert report["call"]["status"] == "ended"
    assert report["durationSeconds"] > 0
    # What was received is exactly what the log says was sent.
    sent = simulator.sim.webhooks_sent(call["id"])
    assert [s["body"] for s in sent] == [item.body for item in receiver.received]
    assert all(s["status"] == 200 and s["delivered"] for s in sent)


async def test_transcripts_only_when_subscribed(
    simulator: SimulatorServer, vapi: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    finals_only = await place_call(
        vapi, with_overrides(serverMessages=['transcript[transcriptType="final"]', "end-of-call-report"])
    )
    everything = await place_call(vapi, with_overrides(serverMessages=["transcript", "end-of-call-report"]))
    await simulator.sim.wait_idle(finals_only["id"])
    await simulator.sim.wait_idle(everything["id"])
    kinds = {m["transcriptType"] for m in receiver.messages(finals_only["id"], "transcript")}
    assert kinds == {"final"}
    assert len(receiver.messages(finals_only["id"], "transcript")) == 3
    assert {m["transcriptType"] for m in receiver.messages(everything["id"], "transcript")} == {"partial", "final"}
    assert {m["type"] for m in receiver.messages(everything["id"])} == {"transcript", "end-of-call-report"}


async def test_assistant_server_override_wins(
    simulator: SimulatorServer, vapi: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    other_url = receiver.url.replace("/webhooks/vapi", "/override")
    body = with_overrides(
        server={"url": other_url, "headers": {"Authorization": "Bearer hook-token"}, "timeoutSeconds": 5},
        serverMessages=["status-update"],
    )
    call = await place_call(vapi, body)
    await simulator.sim.wait_idle(call["id"])
    assert {item.path for item in receiver.received} == {"/override"}
    assert all(item.headers["authorization"] == "Bearer hook-token" for item in receiver.received)
    assert all("x-vapi-secret" not in item.headers for item in receiver.received)


async def test_failed_deliveries_are_logged_and_not_retried(
    simulator: SimulatorServer, vapi: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    receiver.status = 500
    call = await place_call(vapi, with_overrides(serverMessages=["status-update"]))
    await simulator.sim.wait_idle(call["id"])
    sent = simulator.sim.webhooks_sent(call["id"])
    assert [s["status"] for s in sent] == [500, 500, 500]
    assert all(not s["delivered"] and s["error"] == "HTTP 500" for s in sent)
    assert len(receiver.received) == 3  # one attempt each


async def test_injected_webhook_fault_drops_messages(
    simulator: SimulatorServer, vapi: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    simulator.sim.set_webhook_fault(types=["status-update"], count=2)
    call = await place_call(vapi, with_overrides(serverMessages=["status-update", "end-of-call-report"]))
    await simulator.sim.wait_idle(call["id"])
    assert [m["status"] for m in receiver.messages(call["id"], "status-update")] == ["ended"]
    failed = [s for s in simulator.sim.webhooks_sent(call["id"]) if not s["delivered"]]
    assert [s["body"]["message"]["status"] for s in failed] == ["ringing", "in-progress"]
    assert all(s["status"] is None and "injected" in s["error"] for s in failed)


async def test_unreachable_server_is_logged(receiver: WebhookReceiver) -> None:
    sim = VapiSimulator(server_url="http://127.0.0.1:9/hook", pace=20, script=SHORT_SCRIPT)
    async with SimulatorServer(sim) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        call = await place_call(client, with_overrides(serverMessages=["status-update"]))
        await sim.wait_idle(call["id"])
    sent = sim.webhooks_sent(call["id"])
    assert len(sent) == 3
    assert all(s["status"] is None and s["error"].startswith("ConnectError") for s in sent)


async def test_hmac_signature(receiver: WebhookReceiver) -> None:
    sim = VapiSimulator(server_url=receiver.url, hmac_secret="hmac-key", pace=20, script=SHORT_SCRIPT)
    async with SimulatorServer(sim) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        call = await place_call(client, with_overrides(serverMessages=["status-update"]))
        await sim.wait_idle(call["id"])
    assert len(receiver.received) == 3
    for item in receiver.received:
        signed = item.headers["x-timestamp"].encode() + b"." + item.raw
        expected = hmac.new(b"hmac-key", signed, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(item.headers["x-signature"], expected)


async def test_queued_status_and_hang_when_scripted(
    simulator: SimulatorServer, vapi: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    import dataclasses

    simulator.sim.script = dataclasses.replace(SHORT_SCRIPT, send_queued_status=True, hang_at=1.0)
    call = await place_call(vapi)
    await simulator.sim.wait_idle(call["id"])
    statuses = [m["status"] for m in receiver.messages(call["id"], "status-update")]
    assert statuses == ["queued", "ringing", "in-progress", "ended"]
    assert len(receiver.messages(call["id"], "hang")) == 1
