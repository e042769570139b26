"""Item 7: hostile bodies, filters and cursors get 4xx problem documents, never 500."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.conftest import WEBHOOK_SECRET

JSON_ROUTES = [
    "/v1/calls",
    "/v1/calls/import",
    "/v1/calls/call-1/say",
    "/v1/calls/call-1/control",
    "/v1/rules",
    "/v1/rules/validate",
    "/v1/rules/dry-run",
    "/v1/webhook-endpoints",
    "/webhooks/vapi",
]
HOSTILE_BODIES = {
    "nested 5,000 deep (arrays)": b"[" * 5000 + b"]" * 5000,
    "nested 5,000 deep (objects)": b'{"a":' * 5000 + b"1" + b"}" * 5000,
    "nested 500 deep (decodes, then recursion)": b'{"message": {"type": "x", "a": ' + b"[" * 500 + b"]" * 500 + b"}}",
    "invalid UTF-8 in a string": b'{"name": "\xff\xfe"}',
}


FORGED_CURSORS = {
    "naive-date": json.dumps(["2025-01-31T09:00:00", "7420f27a-30fd-4f49-a995-5549ae7cc00d"]).encode(),
    "nested-id": json.dumps(["2025-01-31T09:00:00+00:00", [[["nested"]]]]).encode(),
    "deep-json": b"[" * 3000 + b"]" * 3000,
}


@pytest.mark.parametrize("body", HOSTILE_BODIES.values(), ids=list(HOSTILE_BODIES))
async def test_every_json_route_answers_a_hostile_body_with_400(api: httpx.AsyncClient, body: bytes) -> None:
    headers = {"Content-Type": "application/json", "X-Vapi-Secret": WEBHOOK_SECRET}
    for route in JSON_ROUTES:
        response = await api.post(route, content=body, headers=headers)
        assert response.status_code == 400, (route, response.status_code, response.text[:200])
        assert response.headers["content-type"] == "application/problem+json", route


@pytest.mark.parametrize("path", ["/v1/calls", "/v1/recordings"])
async def test_a_time_filter_without_a_time_zone_is_400(api: httpx.AsyncClient, path: str) -> None:
    for name in ("createdAfter", "createdBefore"):
        response = await api.get(path, params={name: "2025-01-31T09:00:00"})
        assert response.status_code == 400, (name, response.text)
        assert name in response.json()["detail"]
    aware = await api.get(path, params={"createdAfter": "2025-01-31T09:00:00Z"})
    assert aware.status_code == 200, aware.text


@pytest.mark.parametrize("raw", FORGED_CURSORS.values(), ids=list(FORGED_CURSORS))
async def test_a_forged_cursor_is_4xx(api: httpx.AsyncClient, raw: bytes) -> None:
    forged = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    for path in ("/v1/calls", "/v1/recordings", "/v1/webhook-endpoints"):
        response = await api.get(path, params={"cursor": forged})
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text[:200])
