"""Item 8: the smaller findings (headers, metric labels, private addresses, monitor URLs, static files)."""

from __future__ import annotations

import asyncio
import ipaddress
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.outbound_urls import refusal_reason
from service.recordings.controllers import content_disposition
from service.simulator import CallScript
from tests.conftest import WEBHOOK_SECRET
from tests.harness import running_stack

SHORT = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=2.0, turns=())


@pytest.mark.parametrize("name", ['a"b.pcm', "a\r\nSet-Cookie: x=1.pcm", "ünï;cödé.wav"])
def test_content_disposition_cannot_be_broken_by_the_file_name(name: str) -> None:
    header = content_disposition(name)
    plain = header.split('filename="', 1)[1].split('"', 1)[0]
    assert all(ch.isalnum() or ch in "._-" for ch in plain), header
    assert "\r" not in header
    assert "\n" not in header
    assert header.count('"') == 2
    assert "filename*=UTF-8''" in header


async def test_the_webhook_type_label_is_bounded(api: httpx.AsyncClient) -> None:
    headers = {"X-Vapi-Secret": WEBHOOK_SECRET}
    for kind in ("x" * 128, "<script>alert(1)</script>", "status-update"):
        message = {"message": {"type": kind, "timestamp": 1, "call": {"id": "call-1"}}}
        assert (await api.post("/webhooks/vapi", json=message, headers=headers)).status_code == 200
    too_long = {"message": {"type": "x" * 5000, "timestamp": 2, "call": {"id": "call-1"}}}
    assert (await api.post("/webhooks/vapi", json=too_long, headers=headers)).status_code == 400
    metrics = (await api.get("/metrics")).text
    assert 'switchboard_webhooks_total{type="other"} 2.0' in metrics
    assert 'switchboard_webhooks_total{type="status-update"} 1.0' in metrics
    assert "xxxx" not in metrics
    assert "<script>" not in metrics


@pytest.mark.parametrize(
    "address",
    ["2002:7f00:1::1", "2002:a9fe:a9fe::1", "2002:0a00:0001::", "64:ff9b:1::a00:1", "::10.0.0.1"],
)
def test_ipv6_forms_that_embed_a_private_ipv4_are_refused(address: str) -> None:
    assert refusal_reason(ipaddress.ip_address(address)) is not None


def test_6to4_of_a_public_address_stays_allowed() -> None:
    assert refusal_reason(ipaddress.ip_address("2002:0808:0808::1")) is None


async def test_a_6to4_endpoint_for_loopback_is_refused(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/v1/webhook-endpoints", json={"url": "http://[2002:7f00:1::1]:8080/hooks", "events": ["call.ended"]}
    )
    assert response.status_code == 422, response.text
    assert "127.0.0.1" in response.json()["detail"]


def monitored(call_id: str, listen_url: str, control_url: str) -> dict[str, Any]:
    return {
        "message": {
            "type": "status-update",
            "status": "in-progress",
            "timestamp": 1_760_000_000_000,
            "call": {
                "id": call_id,
                "type": "webCall",
                "monitor": {"listenUrl": listen_url, "controlUrl": control_url},
            },
        }
    }


async def listen_failures(api: httpx.AsyncClient, call_id: str) -> list[str]:
    async with asyncio.timeout(10):
        while True:
            events = (await api.get(f"/v1/calls/{call_id}/events")).json()["data"]
            failed = [e["payload"]["reason"] for e in events if e["type"] == "listen.failed"]
            if failed:
                return failed
            await asyncio.sleep(0.05)


async def test_monitor_urls_to_internal_addresses_are_never_connected(api: httpx.AsyncClient) -> None:
    """A forged webhook (leaked secret) points the monitor URLs at loopback; Vapi's host is elsewhere."""
    headers = {"X-Vapi-Secret": WEBHOOK_SECRET}
    body = monitored("call-ssrf", "ws://127.0.0.1:6379/listen", "http://169.254.169.254/latest/meta-data")
    assert (await api.post("/webhooks/vapi", json=body, headers=headers)).status_code == 200
    [reason] = await listen_failures(api, "call-ssrf")
    assert "the listen URL is refused" in reason
    assert "loopback" in reason
    said = await api.post("/v1/calls/call-ssrf/say", json={"content": "hello"})
    assert said.json()["status"] == "failed", said.text
    assert "control URL is refused" in said.json()["error"]
    assert "link-local" in said.json()["error"]


async def test_the_simulator_on_loopback_stays_reachable(database_url: str, tmp_path: Path) -> None:
    """Loopback is allowed for the host of SWITCHBOARD_VAPI_BASE_URL (the simulator in tests)."""
    async with running_stack(database_url, tmp_path, script=SHORT, pace=3) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "in-progress")
        said = await stack.client.post(f"/v1/calls/{call_id}/say", json={"content": "hello"})
        assert said.json()["status"] == "sent", said.text
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        recording = await stack.wait_for_recording(call_id)
        assert recording["status"] == "completed"

        # 416 says how long the file is (RFC 9110), so a client can ask again.
        total = recording["bytes"]
        response = await stack.client.get(
            f"/v1/calls/{call_id}/recording.pcm", headers={"Range": f"bytes={total + 10}-"}
        )
        assert response.status_code == 416
        assert response.headers["content-range"] == f"bytes */{total}"
        ok = await stack.client.get(f"/v1/calls/{call_id}/recording.pcm")
        assert (
            ok.headers["content-disposition"]
            == f"attachment; filename=\"{call_id}.pcm\"; filename*=UTF-8''{call_id}.pcm"
        )


@pytest.mark.parametrize("name", ["api.js", "console.css"])
async def test_static_files_are_served_with_nosniff(api: httpx.AsyncClient, name: str) -> None:
    response = await api.get(f"/console/static/{name}")
    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
