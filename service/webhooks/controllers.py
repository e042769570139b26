"""``POST /webhooks/vapi``: Vapi's server URL."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, post
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK

from service.settings import Settings
from service.webhooks.service import WebhookService

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
            "(x-signature, x-timestamp; algorithm, encoding, headers and payload configurable). A message "
            "delivered twice (same call, type, timestamp, status, role, turn) is stored once. A message that "
            "needs an answer (tool-calls, assistant-request, transfer-destination-request, …) is answered "
            "with the call's upstream's status and body, or an error in the message's own answer shape."
        ),
    )
    async def receive(self, request: Request[Any, Any, Any], webhooks: Webhooks) -> WebhookAck | Response[bytes]:
        # One dependency on purpose: Litestar resolves several concurrently in a task group, which
        # costs more than the rest of this hot path.
        result = await webhooks.receive(request.headers, await request.body())
        if (answer := result.answer) is not None:
            return Response(content=answer.body, status_code=answer.status, media_type=answer.media_type)
        return WebhookAck(stored=result.stored, seq=result.seq, duplicate=result.duplicate)
