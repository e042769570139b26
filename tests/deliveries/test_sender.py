"""One attempt against a swapped transport: signatures, and every receiver fault becoming a result."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from standardwebhooks import Webhook

from service.deliveries.sender import ClaimedDelivery, WebhookSender, sign_headers
from service.deliveries.service import generate_secret
from service.metrics import Metrics

SECRET = generate_secret()
BODY = b'{"type":"call.created","timestamp":"2026-11-26T12:00:00Z","data":{"callId":"c1"}}'
Handler = Callable[[httpx.Request], httpx.Response]


def claimed(url: str = "http://127.0.0.1:9/hooks") -> ClaimedDelivery:
    return ClaimedDelivery(
        delivery_id=uuid.uuid4(),
        endpoint_id=uuid.uuid4(),
        url=url,
        secret=SECRET,
        message_id="msg_1",
        event_type="call.created",
        body=BODY,
        created_at=dt.datetime.now(dt.UTC),
        attempt=1,
    )


@pytest.fixture
async def send_with() -> AsyncIterator[Callable[[Handler], WebhookSender]]:
    clients: list[httpx.AsyncClient] = []

    def make(handler: Handler) -> WebhookSender:
        client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
        clients.append(client)
        return WebhookSender(client, metrics=Metrics(), allow_private=True, timeout=1.0)

    yield make
    for client in clients:
        await client.aclose()


def test_signed_headers_verify_with_the_library() -> None:
    headers = sign_headers(SECRET, "msg_1", dt.datetime.now(dt.UTC), BODY)
    assert Webhook(SECRET).verify(BODY, headers)["data"] == {"callId": "c1"}
    tampered = BODY.replace(b"c1", b"c2")
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(tampered, headers)


async def test_success(send_with: Callable[[Handler], WebhookSender]) -> None:
    seen: list[httpx.Request] = []

    def ok(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202)

    result = await send_with(ok).send(claimed())
    assert (result.status_code, result.error, result.succeeded) == (202, None, True)
    [request] = seen
    assert request.content == BODY
    assert request.headers["webhook-id"] == "msg_1"
    Webhook(SECRET).verify(request.content, dict(request.headers))


async def test_an_error_body_is_logged_but_only_its_start(send_with: Callable[[Handler], WebhookSender]) -> None:
    result = await send_with(lambda request: httpx.Response(500, content=b"x" * 100_000)).send(claimed())
    assert result.status_code == 500
    assert result.error == "HTTP 500: " + "x" * 512
    assert not result.succeeded


async def test_redirects_are_not_followed(send_with: Callable[[Handler], WebhookSender]) -> None:
    def redirect(request: httpx.Request) -> httpx.Response:
        assert request.url.host == "127.0.0.1", "followed the redirect"
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/"})

    result = await send_with(redirect).send(claimed())
    assert result.status_code == 302
    assert not result.succeeded


async def test_transport_errors_become_results(send_with: Callable[[Handler], WebhookSender]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    result = await send_with(refuse).send(claimed())
    assert result.status_code is None
    assert result.error == "ConnectError: connection refused"


async def test_410_and_retry_after(send_with: Callable[[Handler], WebhookSender]) -> None:
    gone = await send_with(lambda request: httpx.Response(410)).send(claimed())
    assert gone.gone
    busy = await send_with(lambda request: httpx.Response(429, headers={"Retry-After": "7"})).send(claimed())
    assert (busy.status_code, busy.retry_after) == (429, 7.0)
