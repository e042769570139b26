"""The transparent tap (contract section 9) end to end: the simulator as Vapi, Switchboard, and the
customer's own server (the upstream), all on loopback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from litestar import Litestar, Request, Response, post

from service.apikeys.service import ApiKeyService
from service.db.engine import Database
from service.simulator import SimulatorServer, VapiSimulator
from service.simulator.calls import TWILIO_AUTH_TOKEN
from service.vapi.messages import FINAL_TRANSCRIPTS, REQUEST_TYPES
from tests.conftest import VAPI_KEY, WEBHOOK_SECRET
from tests.harness import CALL, SHORT_SCRIPT, Stack, running_switchboard
from tests.servers import bind_loopback, serve

TOOL_CALLS = {
    "toolCallList": [{"id": "call_abc", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}]
}
TOOL_ANSWER = {"results": [{"name": "lookup", "toolCallId": "call_abc", "result": "Order 42 ships Monday."}]}


@dataclass
class Upstream:
    """The customer's server: records every POST; answers per message type (``answers``), else ``status``."""

    url: str = ""
    status: int = 200
    delay: float = 0.0
    answers: dict[str, tuple[int, Any]] = field(default_factory=dict)
    received: list[tuple[dict[str, str], bytes, dict[str, Any]]] = field(default_factory=list)

    def messages(self, message_type: str | None = None) -> list[dict[str, Any]]:
        found = [body["message"] for _, _, body in self.received]
        return [message for message in found if message_type is None or message["type"] == message_type]

    def app(self) -> Litestar:
        @post("/{path:path}", status_code=200)
        async def receive(request: Request[Any, Any, Any]) -> Response[Any]:
            raw = await request.body()
            body = msgspec.json.decode(raw)
            self.received.append((dict(request.headers), raw, body))
            await asyncio.sleep(self.delay)
            status, answer = self.answers.get(body["message"]["type"], (self.status, {"ok": True}))
            return Response(content=answer, status_code=status)

        return Litestar([receive], logging_config=None, openapi_config=None)


@asynccontextmanager
async def upstream_server() -> AsyncIterator[Upstream]:
    upstream = Upstream()
    sock = bind_loopback()
    async with serve(upstream.app(), sock) as base_url:
        upstream.url = f"{base_url}/crm/vapi"
        yield upstream


@asynccontextmanager
async def tap(
    database_url: str, tmp_path: Path, *, sim: VapiSimulator | None = None, **settings: Any
) -> AsyncIterator[tuple[Stack, Upstream]]:
    """The simulator, Switchboard (private upstreams allowed: they are on loopback) and an upstream."""
    sim = sim or VapiSimulator(api_key=VAPI_KEY, pace=8, script=SHORT_SCRIPT)
    async with (
        upstream_server() as upstream,
        SimulatorServer(sim) as simulator,
        running_switchboard(
            database_url, tmp_path, simulator, webhook_allow_private=True, webhook_retry_delays=[0.2], **settings
        ) as stack,
    ):
        yield stack, upstream


async def wait_for(predicate: Any, timeout: float = 15) -> Any:
    async with asyncio.timeout(timeout):
        while not (result := await predicate()):
            await asyncio.sleep(0.05)
        return result


async def forwards(stack: Stack, call_id: str) -> list[dict[str, Any]]:
    response = await stack.client.get(f"/v1/calls/{call_id}/forwards")
    assert response.status_code == 200, response.text
    data: list[dict[str, Any]] = response.json()["data"]
    return data


async def test_a_tool_call_is_relayed_to_the_callers_own_server(database_url: str, tmp_path: Path) -> None:
    async with tap(database_url, tmp_path) as (stack, upstream):
        upstream.answers["tool-calls"] = (200, TOOL_ANSWER)
        server = {"url": upstream.url, "headers": {"X-Crm-Key": "crm-secret"}}
        call_id = await stack.place_call(assistantOverrides={"server": server, "serverMessages": ["tool-calls"]})
        sim_call = await stack.sim.wait_for_status(call_id, "in-progress")
        assert sim_call.delivery.url == f"{stack.base_url.rstrip('/')}/webhooks/vapi", "Vapi talks to Switchboard"
        assert "tool-calls" in sim_call.delivery.subscription

        entry = await stack.sim.request(call_id, "tool-calls", **TOOL_CALLS)

        assert entry is not None
        assert (entry["status"], entry["answer"]) == (200, TOOL_ANSWER), "the upstream's answer reached Vapi"
        headers, raw, _ = upstream.received[0]
        assert msgspec.json.decode(raw) == entry["body"], "the upstream got Vapi's exact body"
        assert headers["x-crm-key"] == "crm-secret"
        events = await stack.events(call_id)
        kinds = [event["type"] for event in events]
        answered = events[kinds.index("upstream.answered")]
        assert kinds[kinds.index("upstream.answered") - 1] == "tool-calls"
        assert answered["payload"]["answer"] == TOOL_ANSWER
        call = (await stack.client.get(f"/v1/calls/{call_id}")).json()
        assert call["upstream"]["url"] == upstream.url
        assert call["upstream"]["source"] == "call"
        await stack.sim.wait_idle(call_id)
        assert upstream.messages() == [upstream.messages("tool-calls")[0]], "only what it subscribed to"


async def test_the_assistants_server_gets_its_subscription_in_order_and_answers_tools(
    database_url: str, tmp_path: Path
) -> None:
    wanted = ["tool-calls", "status-update", "end-of-call-report"]
    sim = VapiSimulator(api_key=VAPI_KEY, pace=8, script=SHORT_SCRIPT)
    async with tap(database_url, tmp_path, sim=sim) as (stack, upstream):
        sim.assistants[str(CALL["assistantId"])] = {
            "server": {"url": upstream.url, "headers": {"Authorization": "Bearer crm"}},
            "serverMessages": wanted,
        }
        upstream.answers["tool-calls"] = (200, TOOL_ANSWER)
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "in-progress")
        entry = await stack.sim.request(call_id, "tool-calls", **TOOL_CALLS)
        assert entry is not None
        assert entry["answer"] == TOOL_ANSWER
        await stack.sim.wait_idle(call_id)

        sent = [m for m in stack.sim.messages_sent(call_id) if m["type"] in ("status-update", "end-of-call-report")]
        await wait_for(lambda: _all_delivered(stack, call_id, len(sent)))
        got = [m for m in upstream.messages() if m["type"] != "tool-calls"]
        assert [(m["type"], m.get("status")) for m in got] == [(m["type"], m.get("status")) for m in sent]
        assert {m["type"] for m in upstream.messages()} <= set(wanted), "nothing it did not subscribe to"
        assert all(headers["authorization"] == "Bearer crm" for headers, _, _ in upstream.received)
        assert "x-vapi-secret" not in upstream.received[-1][0], "Switchboard's own secret stays with Switchboard"
        call = (await stack.client.get(f"/v1/calls/{call_id}")).json()
        assert call["upstream"]["source"] == "assistant"


async def _all_delivered(stack: Stack, call_id: str, count: int) -> bool:
    found = await forwards(stack, call_id)
    return len(found) == count and all(forward["status"] == "delivered" for forward in found)


async def test_without_an_upstream_no_request_is_subscribed_nor_acknowledged(database_url: str, tmp_path: Path) -> None:
    async with tap(database_url, tmp_path) as (stack, _):
        call_id = await stack.place_call()
        sim_call = await stack.sim.wait_for_status(call_id, "in-progress")
        assert not sim_call.delivery.subscription & REQUEST_TYPES
        # Vapi asks anyway (a tool's own server URL was removed, an old subscription): an error answer.
        body = {"message": {"type": "tool-calls", "timestamp": 1, "call": {"id": call_id}, **TOOL_CALLS}}
        response = await stack.client.post("/webhooks/vapi", json=body, headers={"X-Vapi-Secret": WEBHOOK_SECRET})
        assert response.status_code == 200
        [result] = response.json()["results"]
        assert result["toolCallId"] == "call_abc"
        assert "no upstream" in result["error"]
        assert "stored" not in response.json()
        body = {"message": {"type": "assistant-request", "timestamp": 2, "call": {"id": "inbound-1"}}}
        response = await stack.client.post("/webhooks/vapi", json=body, headers={"X-Vapi-Secret": WEBHOOK_SECRET})
        assert set(response.json()) == {"error"}


async def test_an_inbound_assistant_request_is_relayed_and_the_call_recorded(database_url: str, tmp_path: Path) -> None:
    sim = VapiSimulator(api_key=VAPI_KEY, pace=8, script=SHORT_SCRIPT)
    async with upstream_server() as upstream, SimulatorServer(sim) as simulator:
        upstream.answers["assistant-request"] = (200, {"assistantId": "asst-inbound"})
        async with running_switchboard(
            database_url, tmp_path, simulator, forward_url=upstream.url, forward_headers={"X-Org": "acme"}
        ) as stack:
            sim.phone_numbers["pn-in"] = {"server": {"url": f"{stack.base_url.rstrip('/')}/webhooks/vapi"}}
            sim.phone_numbers["pn-in"]["server"]["headers"] = {"X-Vapi-Secret": WEBHOOK_SECRET}
            call, entry = await sim.inbound_call("pn-in", {"number": "+14155550199"})

            assert call is not None, entry
            answer = entry["answer"]
            assert answer["assistantId"] == "asst-inbound"
            overrides = answer["assistantOverrides"]
            assert overrides["monitorPlan"]["listenEnabled"] is True
            assert overrides["server"]["url"] == f"{stack.base_url.rstrip('/')}/webhooks/vapi"
            assert upstream.received[0][0]["x-org"] == "acme", "the org-wide headers"
            recording = await stack.wait_for_recording(call.id)
            assert recording["status"] == "completed"
            stored = (await stack.client.get(f"/v1/calls/{call.id}")).json()
            assert stored["type"] == "inboundPhoneCall"
            assert stored["upstream"]["source"] == "default"
            await sim.wait_idle(call.id)
            await wait_for(lambda: _ended_forwarded(upstream))


async def _ended_forwarded(upstream: Upstream) -> bool:
    return bool(upstream.messages("end-of-call-report"))


async def test_an_upstream_that_is_down_gets_its_messages_later_in_order(database_url: str, tmp_path: Path) -> None:
    async with tap(database_url, tmp_path) as (stack, upstream):
        upstream.status = 503
        call_id = await stack.place_call(assistantOverrides={"server": {"url": upstream.url}})
        await stack.sim.wait_idle(call_id)
        assert all(entry["status"] == 200 for entry in stack.sim.webhooks_sent(call_id)), "Vapi answered at once"
        pending = await forwards(stack, call_id)
        assert pending
        assert any(forward["attempts"] >= 1 for forward in pending)
        assert pending[0]["lastStatusCode"] == 503 or pending[0]["attempts"] == 0
        retried = {raw for _, raw, _ in upstream.received}
        assert len(upstream.received) >= 2, "retried"
        assert len(retried) == 1, "the next of the call waits for the first"

        upstream.status = 200
        await wait_for(lambda: _all_delivered(stack, call_id, len(pending)))
        delivered = [body["message"] for _, _, body in upstream.received[-len(pending) :]]
        sent = [m for m in stack.sim.messages_sent(call_id) if not m["type"].startswith("transcript")]
        # A message's identity is its type and timestamp: two types may share a millisecond.
        identities = {(d["type"], d["timestamp"]) for d in delivered}
        order = [(m["type"], m["timestamp"]) for m in sent if (m["type"], m["timestamp"]) in identities]
        assert [(m["type"], m["timestamp"]) for m in delivered] == order


async def test_a_private_upstream_is_refused_unless_allowed(database_url: str, tmp_path: Path) -> None:
    sim = VapiSimulator(api_key=VAPI_KEY, pace=8, script=SHORT_SCRIPT)
    async with SimulatorServer(sim) as simulator, running_switchboard(database_url, tmp_path, simulator) as stack:
        body = {**CALL, "assistantOverrides": {"server": {"url": "http://127.0.0.1:9/hook"}}}
        response = await stack.client.post("/v1/calls", json=body)
        assert response.status_code == 422, response.text
        assert "assistantOverrides.server.url" in response.json()["detail"]
        assert not sim.calls, "nothing placed at Vapi"


async def test_redelivery_is_stored_once_and_no_secret_is_readable(database_url: str, tmp_path: Path) -> None:
    async with tap(database_url, tmp_path) as (stack, _):
        call_id = await stack.place_call()
        await stack.sim.wait_idle(call_id)
        again = await stack.sim.redeliver(call_id, "end-of-call-report")  # a backoff plan retry
        assert again is not None
        assert again["delivered"]
        first, second = stack.sim.webhooks_sent(call_id, "end-of-call-report")
        assert first["body"] != second["body"], "Vapi signs presigned URLs anew for every delivery"

        events = await stack.events(call_id)
        assert sum(1 for event in events if event["type"] == "end-of-call-report") == 1
        text = json.dumps(events)
        assert "presigned" not in text
        assert TWILIO_AUTH_TOKEN not in text
        assert "sim-twilio-api-secret" not in text
        assert "recordingUrl" in text, "an admin reads recording URLs"
        assert "pcapUrl" in text
        db = Database(database_url)
        try:
            _, key = await ApiKeyService(db, admin_key=None).create("reader", ["calls:read"])
        finally:
            await db.dispose()
        reader = {"Authorization": f"Bearer {key}"}
        limited = await stack.client.get(f"/v1/calls/{call_id}/events", params={"limit": 500}, headers=reader)
        assert limited.status_code == 200
        assert "recordingUrl" not in limited.text
        assert "pcapUrl" not in limited.text
        assert (await stack.client.get(f"/v1/calls/{call_id}", headers=reader)).json()["upstream"] is None


@pytest.mark.parametrize("unit", ["s", "ms"])
async def test_hmac_variants_are_accepted_and_a_tampered_body_refused(
    database_url: str, tmp_path: Path, unit: str
) -> None:
    from service.simulator.webhooks import HmacSigning

    signing = HmacSigning(
        "hmac-key",
        algorithm="sha512",
        encoding="base64",
        signature_header="x-vapi-signature",
        timestamp_header="x-vapi-timestamp",
        prefix="v1=",
        milliseconds=unit == "ms",
    )
    sim = VapiSimulator(api_key=VAPI_KEY, pace=8, script=SHORT_SCRIPT, hmac_signing=signing)
    settings = {
        "webhook_secret": None,
        "webhook_hmac_secret": "hmac-key",
        "webhook_hmac_algorithm": "sha512",
        "webhook_hmac_encoding": "base64",
        "webhook_hmac_signature_header": "x-vapi-signature",
        "webhook_hmac_timestamp_header": "x-vapi-timestamp",
        "webhook_hmac_signature_prefix": "v1=",
    }
    async with tap(database_url, tmp_path, sim=sim, **settings) as (stack, _):
        call_id = await stack.place_call()
        await stack.sim.wait_idle(call_id)
        assert all(entry["delivered"] for entry in stack.sim.webhooks_sent(call_id))
        events = await stack.events(call_id)
        assert any(event["type"] == "end-of-call-report" for event in events)

        last = stack.sim.webhooks_sent(call_id)[-1]
        raw = msgspec.json.encode(last["body"])
        headers = {**signing.headers(raw, now=_now()), "Content-Type": "application/json"}
        tampered = raw.replace(b'"type":"', b'"type":"x', 1)
        async with httpx.AsyncClient(base_url=stack.base_url) as plain:
            assert (await plain.post("/webhooks/vapi", content=tampered, headers=headers)).status_code == 401
            assert (await plain.post("/webhooks/vapi", content=raw, headers=headers)).status_code == 200


def _now() -> float:
    import time

    return time.time()


async def test_a_bracketed_transcript_is_a_transcript_and_fires_a_transcript_rule(
    database_url: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rules:\n"
        "  - name: cancel\n"
        "    on: transcript\n"
        '    if: \'event.role == "user" && event.transcript.contains("cancel")\'\n'
        "    say: Wait!\n"
    )
    sim = VapiSimulator(api_key=VAPI_KEY, pace=8, script=SHORT_SCRIPT, bracketed_types=True)
    async with tap(database_url, tmp_path, sim=sim, rules_file=rules) as (stack, _):
        sim.refuse_listen(None, seconds=60)  # no transcripts from the listen socket: webhooks only
        call_id = await stack.place_call()
        await stack.sim.wait_idle(call_id)
        assert any(m["type"] == FINAL_TRANSCRIPTS for m in stack.sim.messages_sent(call_id))
        events = await stack.events(call_id)
        assert not [event for event in events if event["source"] == "listen"]
        from_vapi = [event for event in events if event["source"] == "vapi" and event["type"] == "transcript"]
        assert from_vapi, [event["type"] for event in events]
        assert {event["payload"]["type"] for event in from_vapi} == {FINAL_TRANSCRIPTS}, "the payload is as sent"
        firings = (await stack.client.get(f"/v1/calls/{call_id}/firings")).json()["data"]
        assert [firing["rule"] for firing in firings] == ["cancel"]


async def test_an_upstreams_failure_is_its_answer_and_a_late_one_an_error_in_shape(
    database_url: str, tmp_path: Path
) -> None:
    async with tap(database_url, tmp_path, forward_timeout_seconds=0.5) as (stack, upstream):
        call_id = await stack.place_call(assistantOverrides={"server": {"url": upstream.url}})
        await stack.sim.wait_for_status(call_id, "in-progress")
        upstream.answers["tool-calls"] = (500, {"message": "CRM is down"})
        failed = await stack.sim.request(call_id, "tool-calls", **TOOL_CALLS)
        assert failed is not None
        assert (failed["status"], failed["answer"]) == (500, {"message": "CRM is down"}), "status and body passed on"

        upstream.delay = 1.0
        late = await stack.sim.request(call_id, "tool-calls", **TOOL_CALLS)
        assert late is not None
        assert late["status"] == 200
        [result] = late["answer"]["results"]
        assert result["toolCallId"] == "call_abc"
        assert "did not answer in time" in result["error"]
        upstream.delay = 0.0
        answered = [e["payload"] for e in await stack.events(call_id) if e["type"] == "upstream.answered"]
        assert [a["status"] for a in answered] == [500, None]
        metrics = (await stack.client.get("/metrics")).text
        assert 'switchboard_upstream_relays_total{outcome="answered"} 1.0' in metrics
        assert 'switchboard_upstream_relays_total{outcome="failed"} 1.0' in metrics
