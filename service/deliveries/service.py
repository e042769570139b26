"""Managing webhook endpoints and reading their delivery log. One method, one unit of work."""

from __future__ import annotations

import base64
import binascii
import secrets
import uuid
from collections import defaultdict

from sqlalchemy import delete, select

from service.db.engine import Database
from service.db.models import WebhookDelivery, WebhookDeliveryAttempt, WebhookEndpoint
from service.deliveries.schemas import EndpointCreate
from service.errors import InvalidInputError, NotFoundError
from service.outbound_urls import Resolver, UnsafeUrlError, check_webhook_url, resolve_host
from service.pagination import keyset_page, newest_first, newest_first_cursor

SECRET_PREFIX = "whsec_"  # noqa: S105 - the Standard Webhooks prefix, not a secret
GENERATED_SECRET_BYTES = 24
# Standard Webhooks: secrets are 24 to 64 random bytes.
MIN_SECRET_BYTES, MAX_SECRET_BYTES = 24, 64


def generate_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(GENERATED_SECRET_BYTES)).decode()


def check_secret(secret: str) -> str:
    """A caller-chosen secret must be what Standard Webhooks libraries accept on the receiving side."""
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        raw = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError("secret must be 'whsec_' followed by base64", field="secret") from None
    if not MIN_SECRET_BYTES <= len(raw) <= MAX_SECRET_BYTES:
        raise InvalidInputError(
            f"secret must encode {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} random bytes, not {len(raw)}",
            field="secret",
        )
    return secret


class WebhookEndpointService:
    """Everything the webhook-endpoints API does; controllers call exactly one method each."""

    def __init__(self, db: Database, *, allow_private: bool, resolver: Resolver = resolve_host) -> None:
        self._db = db
        self._allow_private = allow_private
        self._resolver = resolver

    async def create_endpoint(self, body: EndpointCreate) -> tuple[WebhookEndpoint, str]:
        """Store a new endpoint; returns it with its secret (generated when the caller gave none)."""
        try:
            checked = await check_webhook_url(body.url, allow_private=self._allow_private, resolver=self._resolver)
        except UnsafeUrlError as exc:
            raise InvalidInputError(f"url refused: {exc}", field="url") from None
        secret = check_secret(body.secret) if body.secret is not None else generate_secret()
        endpoint = WebhookEndpoint(
            url=checked.url,
            events=list(dict.fromkeys(body.events)),  # duplicates dropped, order kept
            secret=secret,
            enabled=True,
        )
        async with self._db.write() as session:
            session.add(endpoint)
        return endpoint, secret

    async def list_endpoints(self, *, limit: int, cursor: str | None) -> tuple[list[WebhookEndpoint], str | None]:
        """Newest first, keyset-paginated on ``(created_at, id)``."""
        query = newest_first(
            select(WebhookEndpoint), WebhookEndpoint.created_at, WebhookEndpoint.id, cursor, id_type=uuid.UUID
        ).limit(limit + 1)
        async with self._db.read() as session:
            endpoints = (await session.scalars(query)).all()
        return keyset_page(endpoints, limit, newest_first_cursor)

    async def delete_endpoint(self, endpoint_id: uuid.UUID) -> None:
        """Remove the endpoint with its pending deliveries and its log (the foreign keys cascade)."""
        async with self._db.write() as session:
            result = await session.execute(
                delete(WebhookEndpoint)
                .where(WebhookEndpoint.id == endpoint_id)
                .execution_options(synchronize_session=False)
            )
        if not result.rowcount:  # type: ignore[attr-defined]
            raise NotFoundError(f"no webhook endpoint with id {str(endpoint_id)!r}")

    async def list_deliveries(
        self, endpoint_id: uuid.UUID, *, limit: int, cursor: str | None
    ) -> tuple[list[tuple[WebhookDelivery, list[WebhookDeliveryAttempt]]], str | None]:
        """The endpoint's deliveries, newest first, each with its attempts in the order they were made."""
        query = newest_first(
            select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id),
            WebhookDelivery.created_at,
            WebhookDelivery.id,
            cursor,
            id_type=uuid.UUID,
        ).limit(limit + 1)
        async with self._db.read() as session:
            if await session.get(WebhookEndpoint, endpoint_id) is None:
                raise NotFoundError(f"no webhook endpoint with id {str(endpoint_id)!r}")
            deliveries, next_cursor = keyset_page((await session.scalars(query)).all(), limit, newest_first_cursor)
            attempts: dict[uuid.UUID, list[WebhookDeliveryAttempt]] = defaultdict(list)
            if deliveries:
                rows = await session.scalars(
                    select(WebhookDeliveryAttempt)
                    .where(WebhookDeliveryAttempt.delivery_id.in_([delivery.id for delivery in deliveries]))
                    .order_by(WebhookDeliveryAttempt.attempted_at, WebhookDeliveryAttempt.id)
                )
                for attempt in rows:
                    attempts[attempt.delivery_id].append(attempt)
        return [(delivery, attempts[delivery.id]) for delivery in deliveries], next_cursor
