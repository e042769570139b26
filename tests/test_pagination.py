"""The one keyset-page helper every list endpoint uses."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy import Column, DateTime, MetaData, Table, Uuid, select

from service.errors import InvalidQueryError
from service.pagination import encode_cursor, keyset_page, newest_first, newest_first_cursor


@dataclass
class Row:
    created_at: dt.datetime
    id: uuid.UUID


ROWS = Table("row", MetaData(), Column("id", Uuid), Column("created_at", DateTime(timezone=True)))


def test_a_page_has_a_cursor_only_when_a_row_is_left_over() -> None:
    assert keyset_page([1, 2, 3], 3, str) == ([1, 2, 3], None)
    assert keyset_page([1, 2, 3, 4], 3, str) == ([1, 2, 3], "3")
    assert keyset_page([], 3, str) == ([], None)


def test_the_cursor_names_the_last_row_and_pages_after_it() -> None:
    last = Row(dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), uuid.uuid4())
    query = newest_first(select(ROWS), ROWS.c.created_at, ROWS.c.id, newest_first_cursor(last), id_type=uuid.UUID)
    compiled = query.compile()
    assert "(row.created_at, row.id) < (" in str(compiled)
    assert "ORDER BY row.created_at DESC, row.id DESC" in str(compiled)
    assert list(compiled.params.values()) == [last.created_at, last.id]
    assert "WHERE" not in str(newest_first(select(ROWS), ROWS.c.created_at, ROWS.c.id, None))


@pytest.mark.parametrize(
    "cursor",
    [
        "%%%",
        encode_cursor("yesterday", "d6620785-2778-40a9-b649-34d7ed05cb21"),
        encode_cursor("2026-01-02T00:00:00", "not-a-uuid"),
        "e30",
    ],
)
def test_a_cursor_the_service_did_not_write_is_a_400(cursor: str) -> None:
    with pytest.raises(InvalidQueryError, match="the cursor is not valid"):
        newest_first(select(ROWS), ROWS.c.created_at, ROWS.c.id, cursor, id_type=uuid.UUID)
