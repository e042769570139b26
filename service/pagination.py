"""Keyset pagination for every list endpoint: ``?limit=&cursor=`` → ``{"data": […], "nextCursor": …}``.

A list asks the database for one row more than the page (``limit + 1``): if it comes back, another page
follows, and the cursor names the last row of this one. Cursors are opaque to clients (base64 JSON).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Protocol, TypeVar

from litestar.params import QueryParameter
from sqlalchemy import ColumnElement, Select, tuple_

from service.errors import InvalidQueryError

BAD_CURSOR = "the cursor is not valid: pass back nextCursor unchanged"
MAX_LIMIT = 500

Limit = Annotated[int, QueryParameter(ge=1, le=MAX_LIMIT, description="Page size")]
Cursor = Annotated[str | None, QueryParameter(description="nextCursor of the previous page")]

Row = TypeVar("Row")
SelectT = TypeVar("SelectT", bound=Select[Any])


class Dated(Protocol):
    """A row of a newest-first listing."""

    @property
    def created_at(self) -> dt.datetime: ...

    @property
    def id(self) -> object: ...


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts, default=str).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, RecursionError):  # RecursionError: JSON nested absurdly deep
        raise InvalidQueryError(BAD_CURSOR) from None
    if not isinstance(parts, list):
        raise InvalidQueryError(BAD_CURSOR)
    return parts


def keyset_page(rows: Sequence[Row], limit: int, cursor_after: Callable[[Row], str]) -> tuple[list[Row], str | None]:
    """The page (the first ``limit`` of ``rows``, read with ``limit + 1``) and the cursor of the next, if any."""
    if len(rows) <= limit:
        return list(rows), None
    page = list(rows[:limit])
    return page, cursor_after(page[-1])


def newest_first_cursor(row: Dated) -> str:
    """The cursor after a row of a ``(created_at, id)`` newest-first listing."""
    return encode_cursor(row.created_at.isoformat(), str(row.id))


def newest_first(
    query: SelectT,
    created_at: ColumnElement[Any] | Any,
    row_id: ColumnElement[Any] | Any,
    cursor: str | None,
    *,
    id_type: Callable[[str], object] = str,
) -> SelectT:
    """``query`` ordered newest first on ``(created_at, id)``, after the row ``cursor`` names (no limit)."""
    after = newest_first_position(cursor, id_type=id_type) if cursor else None
    return newest_first_after(query, created_at, row_id, after)


def newest_first_position(cursor: str, *, id_type: Callable[[str], object] = str) -> tuple[dt.datetime, object]:
    """The ``(created_at, id)`` of the row a newest-first cursor names."""
    parts = decode_cursor(cursor)
    try:
        last_created_at, last_id = dt.datetime.fromisoformat(parts[0]), parts[1]
        after = (last_created_at, id_type(str(last_id)))
    except (IndexError, TypeError, ValueError):
        raise InvalidQueryError(BAD_CURSOR) from None
    if last_created_at.tzinfo is None or isinstance(last_id, list | dict):  # ours are UTC, ids scalar
        raise InvalidQueryError(BAD_CURSOR)
    return after


def newest_first_after(
    query: SelectT,
    created_at: ColumnElement[Any] | Any,
    row_id: ColumnElement[Any] | Any,
    after: tuple[Any, Any] | ColumnElement[Any] | None,
) -> SelectT:
    """``query`` ordered newest first on ``(created_at, id)``, after the row at ``after`` (its values, or
    a ``tuple_`` of bound parameters for a statement run from several positions), or from the newest
    (no limit)."""
    if after is not None:
        query = query.where(tuple_(created_at, row_id) < after)
    return query.order_by(created_at.desc(), row_id.desc())
