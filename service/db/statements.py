"""Statements the ORM would build anew on every execution, built once.

SQLAlchemy caches compiled statements by their structure, but never the SQLite and PostgreSQL dialects'
``insert().on_conflict_do_nothing()`` constructs (their cache key is None): compiling one costs about
a millisecond on every execution. The same statement as text with typed parameters is compiled once;
``ON CONFLICT (…) DO NOTHING`` is spelled alike by both databases.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, TextClause, bindparam, text


def table_of(model: type[Any]) -> Table:
    """The table a declarative model is mapped to (typed as a Table, for Core statements)."""
    table = model.__table__
    assert isinstance(table, Table), f"{model.__name__} is not mapped to a table"
    return table


def insert_ignoring_conflicts(
    table: Table, columns: Sequence[str], conflict: Sequence[str], *, returning: str | None = None
) -> TextClause:
    """``INSERT INTO table (columns) VALUES (:columns) ON CONFLICT (conflict) DO NOTHING [RETURNING …]``.

    Parameters are named after the columns and typed like them (JSON, UUIDs and timestamps are
    converted as the ORM would). With ``returning``, the statement returns that column of the inserted
    row, and no row when a conflicting one already existed.
    """
    # Only the table's own column names reach the text: ``table.c`` raises KeyError for any other.
    named = [table.c[name] for name in (*columns, *conflict, *([returning] if returning else []))]
    assert all(column.table is table for column in named)
    quoted = ", ".join(f'"{name}"' for name in columns)
    placeholders = ", ".join(f":{name}" for name in columns)
    target = ", ".join(f'"{name}"' for name in conflict)
    sql = f'INSERT INTO "{table.name}" ({quoted}) VALUES ({placeholders}) ON CONFLICT ({target}) DO NOTHING'  # noqa: S608
    statement = text(sql + (f' RETURNING "{returning}"' if returning else ""))
    statement = statement.bindparams(*(bindparam(name, type_=table.c[name].type) for name in columns))
    return statement.columns(table.c[returning]) if returning else statement  # type: ignore[return-value]
