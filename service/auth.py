"""Authentication and scopes for ``/v1``.

Every ``/v1`` route declares the scope it needs with ``**scoped("calls:read")``; one guard checks it.
Missing or unknown key → 401, key without the scope → 403. WebSocket routes also accept the key
as ``?token=`` (browsers cannot set headers on a WebSocket).
"""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from service.apikeys.service import ApiKeyService, Principal


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
