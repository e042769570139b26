"""HTTP surface of outbound webhooks: thin handlers, one service call each."""

from __future__ import annotations

import uuid

from litestar import Controller, delete, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from litestar.status_codes import HTTP_201_CREATED, HTTP_204_NO_CONTENT

from service.auth import scoped
from service.db.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint
from service.deliveries.schemas import (
    AttemptOut,
    DeliveryOut,
    DeliveryPage,
    EndpointCreate,
    EndpointCreated,
    EndpointOut,
    EndpointPage,
)
from service.deliveries.service import WebhookEndpointService
from service.pagination import Cursor, Limit

Endpoints = NamedDependency[WebhookEndpointService]


def endpoint_out(endpoint: WebhookEndpoint) -> EndpointOut:
    """The endpoint as listed: never its secret."""
    return EndpointOut(
        id=endpoint.id,
        url=endpoint.url,
        events=list(endpoint.events),
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def delivery_out(delivery: WebhookDelivery, attempts: list[WebhookDeliveryAttempt]) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        message_id=delivery.message_id,
        event_type=delivery.event_type,
        status=delivery.status,
        attempt_count=len(attempts),
        next_attempt_at=delivery.next_attempt_at if delivery.status == "pending" else None,
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        delivered_at=delivery.delivered_at,
        created_at=delivery.created_at,
        payload=delivery.payload,
        attempts=[
            AttemptOut(
                attempted_at=attempt.attempted_at,
                status_code=attempt.status_code,
                error=attempt.error,
                duration_ms=attempt.duration_ms,
            )
            for attempt in attempts
        ],
    )


class WebhookEndpointController(Controller):
    path = "/v1/webhook-endpoints"
    tags = ["webhooks"]

    @post(
        "/",
        operation_id="createWebhookEndpoint",
        summary="Subscribe a URL to events; the response shows the signing secret, once",
        status_code=HTTP_201_CREATED,
        **scoped("webhooks:write"),
    )
    async def create_endpoint(self, data: JSONBody[EndpointCreate], webhook_endpoints: Endpoints) -> EndpointCreated:
        endpoint, secret = await webhook_endpoints.create_endpoint(data)
        out = endpoint_out(endpoint)
        return EndpointCreated(
            id=out.id,
            url=out.url,
            events=out.events,
            enabled=out.enabled,
            disabled_reason=out.disabled_reason,
            created_at=out.created_at,
            updated_at=out.updated_at,
            secret=secret,
        )

    @get(
        "/",
        operation_id="listWebhookEndpoints",
        summary="List webhook endpoints, newest first",
        **scoped("webhooks:write"),
    )
    async def list_endpoints(
        self, webhook_endpoints: Endpoints, limit: Limit = 50, cursor: Cursor = None
    ) -> EndpointPage:
        endpoints, next_cursor = await webhook_endpoints.list_endpoints(limit=limit, cursor=cursor)
        return EndpointPage(data=[endpoint_out(endpoint) for endpoint in endpoints], next_cursor=next_cursor)

    @delete(
        "/{endpoint_id:uuid}",
        operation_id="deleteWebhookEndpoint",
        summary="Delete an endpoint with its pending deliveries and log",
        status_code=HTTP_204_NO_CONTENT,
        **scoped("webhooks:write"),
    )
    async def delete_endpoint(self, endpoint_id: FromPath[uuid.UUID], webhook_endpoints: Endpoints) -> None:
        await webhook_endpoints.delete_endpoint(endpoint_id)

    @get(
        "/{endpoint_id:uuid}/deliveries",
        operation_id="listWebhookDeliveries",
        summary="An endpoint's delivery log, newest first, with every attempt",
        **scoped("webhooks:write"),
    )
    async def list_deliveries(
        self, endpoint_id: FromPath[uuid.UUID], webhook_endpoints: Endpoints, limit: Limit = 50, cursor: Cursor = None
    ) -> DeliveryPage:
        deliveries, next_cursor = await webhook_endpoints.list_deliveries(endpoint_id, limit=limit, cursor=cursor)
        return DeliveryPage(
            data=[delivery_out(delivery, attempts) for delivery, attempts in deliveries], next_cursor=next_cursor
        )
