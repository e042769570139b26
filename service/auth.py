"""Authentication and scopes for ``/v1``.

Every ``/v1`` route declares the scope it needs with ``**scoped("calls:read")``; one guard checks it.
Missing or unknown key → 401, key without the scope → 403. WebSocket routes also accept the key
as ``?token=`` (browsers cannot set headers on a WebSocket). Streams that stay open (the live listen
socket, the console's event stream) re-check their key every :data:`RECHECK_SECONDS` with
:func:`until_revoked` and end when it was revoked.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from service.apikeys.service import ApiKeyService, Principal

RECHECK_SECONDS = 2.0


def scoped(scope: str) -> dict[str, Any]:
    """Route keyword arguments for a ``/v1`` route: the scope the guard checks, also shown in OpenAPI
    (as the role list of the bearer requirement, which OpenAPI 3.1 allows)."""
    return {"opt": {"scope": scope}, "security": [{"apiKey": [scope]}]}


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return connection.query_params.get("token") if connection.scope["type"] == ScopeType.WEBSOCKET else None


async def require_scope(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Litestar guard: authenticate the key and check the route's declared scope."""
    keys: ApiKeyService = connection.app.state.api_keys
    token = bearer_token(connection)
    principal = await keys.authenticate(token) if token else None
    if principal is None:
        raise NotAuthorizedException(
            "missing or unknown API key: send Authorization: Bearer <key>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scope = handler.opt.get("scope", "admin")
    if not principal.allows(scope):
        raise PermissionDeniedException(f"this key lacks the {scope!r} scope")
    connection.state.principal = principal


def current_principal(connection: ASGIConnection[Any, Any, Any, Any]) -> Principal:
    principal: Principal = connection.state.principal
    return principal


async def until_revoked(connection: ASGIConnection[Any, Any, Any, Any], interval: float = RECHECK_SECONDS) -> None:
    """Return once the key that opened ``connection`` is revoked (checked every ``interval`` seconds;
    a check that fails, say the database is briefly away, counts as not revoked)."""
    keys: ApiKeyService = connection.app.state.api_keys
    principal = current_principal(connection)
    while True:
        await asyncio.sleep(interval)
        try:
            if await keys.is_revoked(principal):
                return
        except Exception:  # noqa: S112 - keep streaming; the next check decides
            continue
