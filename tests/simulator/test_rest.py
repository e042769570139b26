"""Vapi's REST API as the simulator serves it: POST /call, /call/phone, GET /call/{id}, auth, errors."""

from __future__ import annotations

import re
import uuid

import httpx

from service.simulator import SimulatorServer, VapiSimulator
from tests.simulator.conftest import SHORT_SCRIPT, call_body, place_call

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


async def test_post_call_returns_a_queued_call_with_monitor_urls(
    simulator: SimulatorServer, vapi: httpx.AsyncClient
) -> None:
    body = call_body(name="renewal")
    call = await place_call(vapi, body)
    assert uuid.UUID(call["id"]).version == 4
    assert call["status"] == "queued"
    assert call["type"] == "outboundPhoneCall"
    assert ISO_MS.match(call["createdAt"])
    assert ISO_MS.match(call["updatedAt"])
    assert call["assistantId"] == "asst-1"
    assert call["phoneNumberId"] == "pn-1"
    assert call["customer"] == body["customer"]
    assert call["assistantOverrides"] == body["assistantOverrides"]
    assert call["name"] == "renewal"
    assert call["phoneCallProvider"] == "twilio"
    assert call["phoneCallProviderId"].startswith("CA")
    assert call["phoneCallTransport"] == "pstn"
    assert call["cost"] == 0
    assert call["orgId"] == simulator.sim.org_id
    ws_base = simulator.base_url.replace("http://", "ws://")
    assert call["monitor"] == {
        "listenUrl": f"{ws_base}/{call['id']}/listen",
        "controlUrl": f"{simulator.base_url}/{call['id']}/control",
    }
    assert "startedAt" not in call
    assert "endedReason" not in call


async def test_legacy_call_phone_path(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    response = await vapi.post("/call/phone", json=call_body())
    assert response.status_code == 201
    assert response.json()["id"] in simulator.sim.calls


async def test_get_call_follows_the_lifecycle(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    call = await place_call(vapi)
    await simulator.sim.wait_for_status(call["id"], "ended")
    current = (await vapi.get(f"/call/{call['id']}")).json()
    assert current["status"] == "ended"
    assert current["endedReason"] == "customer-ended-call"
    assert ISO_MS.match(current["startedAt"])
    assert ISO_MS.match(current["endedAt"])
    assert current["startedAt"] <= current["endedAt"]
    assert current["artifact"]["transcript"].startswith("AI: Hello, how can I help?\nUser: I want to cancel")
    assert [m["role"] for m in current["messages"]] == ["bot", "user", "user"]
    listed = (await vapi.get("/call")).json()
    assert [c["id"] for c in listed] == [call["id"]]


async def test_unknown_call_is_404(vapi: httpx.AsyncClient) -> None:
    response = await vapi.get(f"/call/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["statusCode"] == 404


async def test_invalid_bodies_are_rejected_like_vapi(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    response = await vapi.post("/call", json={"phoneNumberId": "pn-1", "customer": {}, "metadata": {}})
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "Bad Request"
    assert body["statusCode"] == 400
    assert isinstance(body["message"], list)
    assert "property metadata should not exist" in body["message"]
    assert any("customer.number" in m for m in body["message"])
    assert any("assistant" in m for m in body["message"])
    bad_json = await vapi.post("/call", content=b"{nope", headers={"content-type": "application/json"})
    assert bad_json.status_code == 400
    assert simulator.sim.calls == {}
    statuses = [e.data["status"] for e in simulator.sim.log.select(kind="rest")]
    assert statuses == [400, 400]


async def test_api_key_is_required_when_configured() -> None:
    sim = VapiSimulator(api_key="private-key", pace=20, script=SHORT_SCRIPT)
    async with SimulatorServer(sim) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        assert (await client.post("/call", json=call_body())).status_code == 401
        wrong = await client.post("/call", json=call_body(), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "Unauthorized"
        ok = await client.post("/call", json=call_body(), headers={"Authorization": "Bearer private-key"})
        assert ok.status_code == 201
        assert (await client.get(f"/call/{ok.json()['id']}")).status_code == 401


async def test_rest_faults_delay_and_fail(simulator: SimulatorServer, vapi: httpx.AsyncClient) -> None:
    simulator.sim.set_rest_fault(status=502, count=1)
    assert (await vapi.post("/call", json=call_body())).status_code == 502
    assert (await vapi.post("/call", json=call_body())).status_code == 201
    simulator.sim.set_rest_fault(delay=0.3, count=1)
    try:
        await vapi.get("/call", timeout=0.05)
    except httpx.TimeoutException:
        pass
    else:  # pragma: no cover - the delay must outlast the client timeout
        raise AssertionError("expected a timeout")


async def test_monitor_urls_follow_the_request_host_without_a_base_url() -> None:
    sim = VapiSimulator(pace=20, script=SHORT_SCRIPT)
    async with SimulatorServer(sim) as server:
        sim.base_url = None
        async with httpx.AsyncClient(base_url=server.base_url.replace("127.0.0.1", "localhost")) as client:
            call = await place_call(client)
    assert call["monitor"]["controlUrl"].startswith("http://localhost:")
    assert call["monitor"]["listenUrl"].startswith("ws://localhost:")
