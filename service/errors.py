"""One error hierarchy for the whole service, mapped to RFC 9457 problem documents in one place.

Services raise :class:`DomainError` subclasses; :func:`problem_handler` turns them (and Litestar's own
HTTP exceptions: validation, 404, 405, 413 …) into ``application/problem+json`` responses. Nothing
else in the code base builds error responses.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError

log = structlog.get_logger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://switchboard.dev/problems/"


class DomainError(Exception):
    """Base of every error a service raises on purpose."""

    status_code = 500
    slug = "internal-error"
    title = "Internal error"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}  # response headers the problem needs (416: Content-Range)


class NotFoundError(DomainError):
    status_code = 404
    slug = "not-found"
    title = "Not found"


class ConflictError(DomainError):
    status_code = 409
    slug = "conflict"
    title = "Conflict"


class BadRequestError(DomainError):
    """The request itself is malformed (a filter or body Switchboard cannot read)."""

    status_code = 400
    slug = "bad-request"
    title = "Bad request"


class InvalidInputError(DomainError):
    status_code = 422
    slug = "invalid-input"
    title = "Invalid input"


class InvalidQueryError(DomainError):
    """A query parameter that cannot be used (an unknown filter value, a foreign cursor): 400, as for
    every malformed query parameter Litestar refuses; 422 stays for bodies that parse but make no sense."""

    status_code = 400
    slug = "bad-request"
    title = "Bad request"


class AuthenticationError(DomainError):
    status_code = 401
    slug = "unauthenticated"
    title = "Authentication required"


class ServiceUnavailableError(DomainError):
    status_code = 503
    slug = "unavailable"
    title = "Temporarily unavailable"


class UpstreamError(DomainError):
    """Vapi answered with an error or could not be reached."""

    status_code = 502
    slug = "upstream-error"
    title = "Vapi request failed"


class UpstreamTimeoutError(UpstreamError):
    status_code = 504
    slug = "upstream-timeout"
    title = "Vapi did not answer in time"


_HTTP_TITLES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    409: ("conflict", "Conflict"),
    413: ("payload-too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    416: ("range-not-satisfiable", "Range not satisfiable"),
    422: ("invalid-input", "Invalid input"),
    429: ("too-many-requests", "Too many requests"),
}


def problem(status: int, slug: str, title: str, detail: str, **extra: Any) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {"type": PROBLEM_BASE + slug, "title": title, "status": status, "detail": detail}
    body.update(extra)
    return Response(body, status_code=status, media_type=PROBLEM_JSON)


def problem_body(exc: DomainError) -> dict[str, Any]:
    """The problem document of a domain error, as stored for idempotent replays."""
    return {
        "type": PROBLEM_BASE + exc.slug,
        "title": exc.title,
        "status": exc.status_code,
        "detail": exc.detail,
        **exc.extra,
    }


def database_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot be reached right now (restart, failover, network)."""
    if isinstance(exc, OperationalError | InterfaceError | DisconnectionError | SQLAlchemyTimeoutError):
        return True
    if isinstance(
        exc,
        ConnectionError
        | asyncpg.exceptions.PostgresConnectionError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.ObjectNotInPrerequisiteStateError
        | asyncpg.exceptions.AdminShutdownError,
    ):
        return True
    return exc.__cause__ is not None and database_unavailable(exc.__cause__)


EMPTY_BODY = "the request body is empty: send a JSON object"


def _readable(errors: Any) -> Any:
    """Litestar's validation errors, except the one a missing body gives: the ``KeyError`` of its
    parameter (``'data'``), which tells a client nothing."""
    if not isinstance(errors, list):
        return errors
    return [
        {**error, "message": EMPTY_BODY}
        if isinstance(error, dict) and error.get("source") == "body" and error.get("message") == f"'{error.get('key')}'"
        else error
        for error in errors
    ]


def problem_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """The one exception handler: every 4xx/5xx leaves the service as a problem document."""
    if isinstance(exc, DomainError):
        if exc.status_code >= 500:
            log.warning("request failed", path=request.url.path, error=exc.slug, detail=exc.detail)
        return Response(problem_body(exc), status_code=exc.status_code, media_type=PROBLEM_JSON, headers=exc.headers)
    if isinstance(exc, HTTPException):
        status = exc.status_code
        if status >= 500:
            log.error("request failed", path=request.url.path, exc_info=exc)
        slug, title = _HTTP_TITLES.get(status, ("http-error", "HTTP error"))
        extra: dict[str, Any] = {}
        if isinstance(exc, ValidationException) and exc.extra:
            extra["errors"] = _readable(exc.extra)
        response = problem(status, slug, title, str(exc.detail), **extra)
        if exc.headers:
            response.headers.update(exc.headers)
        return response
    if database_unavailable(exc):
        log.warning("database unavailable", path=request.url.path, error=type(exc).__name__)
        detail = "the database cannot be reached; retry shortly"
        response = problem(503, "unavailable", "Temporarily unavailable", detail)
        response.headers["Retry-After"] = "5"
        return response
    log.exception("unhandled error", path=request.url.path)
    return problem(500, "internal-error", "Internal error", "an unexpected error occurred; it has been logged")


EXCEPTION_HANDLERS: dict[type[Exception] | int, Any] = {Exception: problem_handler}
__all__ = [
    "EXCEPTION_HANDLERS",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "DomainError",
    "InvalidInputError",
    "InvalidQueryError",
    "NotFoundError",
    "UpstreamError",
    "UpstreamTimeoutError",
    "problem",
]
