"""``POST /webhooks/vapi``: Vapi's server URL."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK

from service.errors import AuthenticationError
from service.settings import Settings
from service.webhooks.service import WebhookService
from service.webhooks.verify import authenticated

AppSettings = NamedDependency[Settings]
Webhooks = NamedDependency[WebhookService]


class WebhookAck(msgspec.Struct, rename="camel"):
    stored: bool
    seq: int | None = None
    duplicate: bool = False


class VapiWebhookController(Controller):
    path = "/webhooks/vapi"
    tags = ["webhooks"]

    @post(
        "/",
        operation_id="receiveVapiWebhook",
        summary="Receive a Vapi server message",
        status_code=HTTP_200_OK,
        security=[{"vapiSecret": []}],
        description=(
            "Vapi's server URL. Authenticated by the shared secret header and/or an HMAC signature "
            "(x-signature, x-timestamp). A message delivered twice (same raw body) is stored once."
        ),
    )
    async def receive(
        self,
        request: Request[Any, Any, Any],
        settings: AppSettings,
        webhooks: Webhooks,
    ) -> WebhookAck:
        raw = await request.body()
        if not authenticated(
            request.headers,
            raw,
            secret_header=settings.webhook_secret_header,
            secret=settings.webhook_secret.get_secret_value() if settings.webhook_secret else None,
            hmac_secret=settings.webhook_hmac_secret.get_secret_value() if settings.webhook_hmac_secret else None,
            now=time.time(),
        ):
            raise AuthenticationError("missing or wrong webhook secret or signature")
        result = await webhooks.ingest(raw)
        return WebhookAck(stored=result.stored, seq=result.seq, duplicate=result.duplicate)
