"""Webhook authentication: shared secret and HMAC, as pure functions and through the receiver."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from service.webhooks.verify import (
    HmacScheme,
    authenticated,
    hmac_ok,
    hmac_signature,
    secret_header_ok,
    timestamp_seconds,
)
from tests.harness import app_client, build_app

HMAC_SECRET = "hmac-test-secret"
NOW = 1_800_000_000


def signed(raw: bytes, timestamp: int, secret: str = HMAC_SECRET) -> dict[str, str]:
    ts = str(timestamp)
    return {"x-timestamp": ts, "x-signature": hmac_signature(raw, timestamp=ts, secret=secret)}


def test_secret_header_is_compared_exactly() -> None:
    assert secret_header_ok({"x-vapi-secret": "abc"}, header="X-Vapi-Secret", secret="abc")
    assert not secret_header_ok({"x-vapi-secret": "abcd"}, header="X-Vapi-Secret", secret="abc")
    assert not secret_header_ok({}, header="X-Vapi-Secret", secret="abc")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (signed(b"{}", NOW), True),
        (signed(b"{}", NOW - 299), True),
        (signed(b"{}", NOW + 299), True),
        (signed(b"{}", NOW - 301), False),
        (signed(b"{}", NOW + 301), False),
        (signed(b"{}", NOW, secret="other"), False),
        (signed(b"{ }", NOW), False),
        ({"x-timestamp": "soon", "x-signature": "00"}, False),
        ({}, False),
    ],
)
def test_hmac_signature_and_freshness(headers: dict[str, str], expected: bool) -> None:
    assert hmac_ok(headers, b"{}", secret=HMAC_SECRET, now=NOW) is expected


def test_sha256_prefix_is_accepted() -> None:
    headers = signed(b"{}", NOW)
    headers["x-signature"] = "sha256=" + headers["x-signature"]
    assert hmac_ok(headers, b"{}", secret=HMAC_SECRET, now=NOW)


def test_either_configured_mode_authenticates() -> None:
    kwargs: dict[str, Any] = {"secret_header": "X-Vapi-Secret", "now": NOW}
    assert authenticated({}, b"{}", secret=None, hmac_secret=None, **kwargs)
    assert authenticated({"x-vapi-secret": "s"}, b"{}", secret="s", hmac_secret=HMAC_SECRET, **kwargs)
    assert authenticated(signed(b"{}", NOW), b"{}", secret="s", hmac_secret=HMAC_SECRET, **kwargs)
    assert not authenticated({}, b"{}", secret="s", hmac_secret=HMAC_SECRET, **kwargs)


@pytest.fixture
async def hmac_client(database_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    app = build_app(database_url, webhook_secret=None, webhook_hmac_secret=HMAC_SECRET)
    async with app_client(app, key=None) as client:
        yield client


async def test_hmac_webhooks_are_accepted_fresh_and_refused_old(hmac_client: AsyncTestClient[Any]) -> None:
    raw = msgspec.json.encode({"message": {"type": "status-update", "status": "ringing", "call": {"id": "h1"}}})
    fresh = await hmac_client.post("/webhooks/vapi", content=raw, headers=signed(raw, int(time.time())))
    assert fresh.status_code == 200
    old = await hmac_client.post("/webhooks/vapi", content=raw, headers=signed(raw, int(time.time()) - 600))
    assert old.status_code == 401
    assert old.headers["content-type"].startswith("application/problem+json")
    forged = await hmac_client.post("/webhooks/vapi", content=raw, headers=signed(raw, int(time.time()), "guess"))
    assert forged.status_code == 401


def test_a_bearer_prefixed_secret_is_accepted() -> None:
    """Vapi's Bearer credential with ``bearerPrefixEnabled`` sends ``Authorization: Bearer <token>``."""
    headers = {"authorization": "Bearer abc"}
    assert secret_header_ok(headers, header="Authorization", secret="abc")
    assert not secret_header_ok({"authorization": "Bearer abcd"}, header="Authorization", secret="abc")


@pytest.mark.parametrize("algorithm", ["sha256", "sha512", "sha1"])
@pytest.mark.parametrize("encoding", ["hex", "base64"])
@pytest.mark.parametrize("payload_format", ["{timestamp}.{body}", "{body}"])
def test_every_hmac_variant_round_trips_and_refuses_tampering(
    algorithm: Literal["sha256", "sha512", "sha1"],
    encoding: Literal["hex", "base64"],
    payload_format: Literal["{timestamp}.{body}", "{body}"],
) -> None:
    scheme = HmacScheme(algorithm, encoding, "x-sig", "x-ts", "v1=", payload_format)
    raw = b'{"message":{"type":"status-update"}}'
    for timestamp in (str(NOW), str(NOW * 1000)):  # seconds and milliseconds
        signature = hmac_signature(raw, timestamp=timestamp, secret=HMAC_SECRET, scheme=scheme)
        assert signature.startswith("v1=")
        headers = {"x-ts": timestamp, "x-sig": signature}
        assert hmac_ok(headers, raw, secret=HMAC_SECRET, now=NOW + 10, scheme=scheme)
        assert not hmac_ok(headers, raw + b" ", secret=HMAC_SECRET, now=NOW + 10, scheme=scheme)
        assert not hmac_ok(headers, raw, secret="other", now=NOW + 10, scheme=scheme)
    stale = {
        "x-ts": str(NOW - 301),
        "x-sig": hmac_signature(raw, timestamp=str(NOW - 301), secret=HMAC_SECRET, scheme=scheme),
    }
    assert not hmac_ok(stale, raw, secret=HMAC_SECRET, now=NOW, scheme=scheme), "±300 s, in either unit"


def test_timestamps_in_seconds_and_milliseconds_are_told_apart_by_size() -> None:
    assert timestamp_seconds(str(NOW)) == NOW
    assert timestamp_seconds(str(NOW * 1000)) == NOW
    assert timestamp_seconds("soon") is None
