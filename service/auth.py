"""API key authentication and scopes for ``/v1``.

Every ``/v1`` route declares the scope it needs in ``opt={"scope": …}``; one guard checks it.
Missing or unknown key → 401, key without the scope → 403. For now the bootstrap admin key
(``SWITCHBOARD_ADMIN_API_KEY``) is the only key.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any

from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

SCOPES = ("calls:read", "calls:write", "recordings:read", "rules:read", "rules:write", "webhooks:write", "admin")


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        return self.is_admin or scope in self.scopes


class ApiKeyAuthenticator:
    def __init__(self, admin_key: str | None) -> None:
        self._admin_key = admin_key.encode() if admin_key else None

    def authenticate(self, token: str) -> Principal | None:
        if self._admin_key and hmac.compare_digest(token.encode(), self._admin_key):
            return Principal("admin", frozenset({"admin"}))
        return None


def bearer_token(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return connection.query_params.get("token") if connection.scope["type"] == ScopeType.WEBSOCKET else None


def require_scope(connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler) -> None:
    """Litestar guard: authenticate the key and check the route's declared scope."""
    authenticator: ApiKeyAuthenticator = connection.app.state.authenticator
    token = bearer_token(connection)
    principal = authenticator.authenticate(token) if token else None
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
