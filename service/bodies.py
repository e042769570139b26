"""The one JSON body parser: hostile bodies get a 400 problem document, never a 500.

msgspec rejects malformed JSON with ``DecodeError``, but a body nested deeper than the interpreter's
recursion limit raises ``RecursionError`` and invalid UTF-8 inside a string raises
``UnicodeDecodeError``; both used to escape as 500s. Every JSON route goes through
:class:`GuardedRequest` (the app's request class, so Litestar's own ``JSONBody`` parsing too), and
``POST /webhooks/vapi`` calls :func:`decode_json_body` itself.

Bodies that decode but are nested deeper than :data:`MAX_DEPTH` are refused as well: the service
walks decoded documents recursively (redaction, metadata, rules), so depth is bounded once here.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ClientException

MAX_DEPTH = 64  # far beyond any Vapi message or API body; far below the recursion limit
TOO_DEEP = f"the body is nested more than {MAX_DEPTH} levels deep"
NOT_UTF8 = "the body is not valid UTF-8"


class BodyError(ValueError):
    """The body is not JSON Switchboard accepts; the message says why."""


def _too_deep(value: Any, limit: int) -> bool:
    """Whether ``value`` nests containers more than ``limit`` deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def decode_json_body(raw: bytes) -> Any:
    """``raw`` decoded, or :class:`BodyError`: malformed, not UTF-8, or nested too deeply."""
    try:
        value = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise BodyError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise BodyError(TOO_DEEP) from None
    except UnicodeDecodeError:
        raise BodyError(NOT_UTF8) from None
    if _too_deep(value, MAX_DEPTH):
        raise BodyError(TOO_DEEP)
    return value


class GuardedRequest(Request[Any, Any, Any]):
    """Litestar's request, with :func:`decode_json_body` as its JSON parser (400 instead of 500)."""

    async def json(self) -> Any:
        """The decoded JSON body (cached), or a 400 problem."""
        try:
            value = await super().json()
        except RecursionError:
            raise ClientException(TOO_DEEP) from None
        except UnicodeDecodeError:
            raise ClientException(NOT_UTF8) from None
        if _too_deep(value, MAX_DEPTH):
            raise ClientException(TOO_DEEP)
        return value
