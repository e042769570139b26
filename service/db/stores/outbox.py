"""Statements on the outbound webhooks' tables read on every call change."""

from __future__ import annotations

from sqlalchemy import select

from service.db.models import WebhookEndpoint
from service.db.statements import table_of

_ENDPOINT = table_of(WebhookEndpoint)
# Read with a key-share lock: an endpoint deleted meanwhile waits for this transaction's deliveries.
ENABLED_ENDPOINTS = (
    select(_ENDPOINT.c.id, _ENDPOINT.c.events)
    .where(_ENDPOINT.c.enabled.is_(True))
    .with_for_update(read=True, key_share=True)
)
