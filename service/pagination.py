"""Opaque cursors for keyset pagination (``?limit=&cursor=`` → ``{"data": […], "nextCursor": …}``)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from typing import Any

from service.errors import InvalidInputError

BAD_CURSOR = "the cursor is not valid: pass back nextCursor unchanged"


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: JSON nested absurdly deep
        raise InvalidInputError(BAD_CURSOR) from None
    if not isinstance(parts, list):
        raise InvalidInputError(BAD_CURSOR)
    return parts


def encode_newest_first(created_at: dt.datetime, row_id: object) -> str:
    """The cursor after a row of a ``(created_at, id)`` newest-first listing."""
    return encode_cursor(created_at.isoformat(), str(row_id))


def decode_newest_first(cursor: str) -> tuple[dt.datetime, str]:
    """``(created_at, id)`` of the last row of the previous page."""
    parts = decode_cursor(cursor)
    try:
        created_at = dt.datetime.fromisoformat(parts[0])
        row_id = parts[1]
    except (IndexError, TypeError, ValueError):
        raise InvalidInputError(BAD_CURSOR) from None
    if created_at.tzinfo is None or isinstance(row_id, list | dict):  # cursors we issue are UTC, ids scalar
        raise InvalidInputError(BAD_CURSOR)
    return created_at, str(row_id)
