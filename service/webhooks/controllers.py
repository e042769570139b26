"""``POST /webhooks/vapi``: Vapi's server URL."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK

from service.errors import AuthenticationError
from service.settings import Settings
from service.webhooks.service import WebhookService
from service.webhooks.verify import secret_header_ok

AppSettings = NamedDependency[Settings]
Webhooks = NamedDependency[WebhookService]


class WebhookAck(msgspec.Struct, rename="camel"):
    stored: bool
    seq: int | None = None


class VapiWebhookController(Controller):
    path = "/webhooks/vapi"
    tags = ["webhooks"]

    @post(
        "/",
        operation_id="receiveVapiWebhook",
        summary="Receive a Vapi server message",
        status_code=HTTP_200_OK,
        description="Vapi's server URL. Authenticated by the shared secret header when one is configured.",
    )
    async def receive(
        self,
        request: Request[Any, Any, Any],
        settings: AppSettings,
        webhooks: Webhooks,
    ) -> WebhookAck:
        if settings.webhook_secret is not None and not secret_header_ok(
            request.headers,
            header=settings.webhook_secret_header,
            secret=settings.webhook_secret.get_secret_value(),
        ):
            raise AuthenticationError("missing or wrong webhook secret")
        result = await webhooks.ingest(await request.body())
        return WebhookAck(stored=result.stored, seq=result.seq)
