"""call_metadata: the index of metadata.<key> filters (both backends), backfilled; drops the GIN index.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 13:00:00
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy of ``service.calls.metadata.index_rows`` as of this revision: a migration must keep
# producing the rows it produced when written, whatever the service's code becomes.
_KEY = re.compile(r"[A-Za-z0-9_-]{1,100}")
_MAX_VALUE = 200


def _canonical(value: Any) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        exact = Decimal(repr(value))
        return str(int(exact)) if exact == exact.to_integral_value() else repr(value)
    return None


def _stored(text: str, kind: str) -> tuple[str, str]:
    if len(text) <= _MAX_VALUE:
        return text, kind
    return hashlib.sha256(text.encode()).hexdigest(), kind.upper()


def index_rows(call_id: str, created_at: Any, metadata: dict[str, Any] | None) -> list[dict[str, Any]]:
    rows = []
    for key, value in (metadata or {}).items():
        if not _KEY.fullmatch(key):
            continue
        canonical = None if isinstance(value, str) else _canonical(value)
        if isinstance(value, str):
            encoded = _stored(value, "s")
        elif canonical is not None:
            encoded = _stored(canonical, "n")
        else:
            continue
        rows.append({"call_id": call_id, "key": key, "value": encoded[0], "kind": encoded[1], "created_at": created_at})
    return rows

BATCH = 2000  # calls read (and their rows written) at a time: memory stays flat on a big table


def upgrade() -> None:
    op.create_table(
        "call_metadata",
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("value", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=1), nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"], ["call.id"], name=op.f("fk_call_metadata_call_id_call"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("call_id", "key", name=op.f("pk_call_metadata")),
    )
    op.create_index("ix_call_metadata_key_value", "call_metadata", ["key", "value", "created_at", "call_id"])
    _backfill()
    if op.get_context().dialect.name == "postgresql":
        op.drop_index("ix_call_metadata", table_name="call")


def _backfill() -> None:
    """One row per filterable metadata value of every existing call, in keyset batches of ``BATCH`` calls.

    ``created_at`` is copied as the driver returns it (no type processing), so it is byte for byte the
    call's own value on SQLite (text) and PostgreSQL (timestamptz).
    """
    connection = op.get_bind()
    read = sa.text("SELECT id, created_at, metadata FROM call WHERE id > :after ORDER BY id LIMIT :batch")
    write = sa.text(
        "INSERT INTO call_metadata (call_id, key, value, kind, created_at) "
        "VALUES (:call_id, :key, :value, :kind, :created_at)"
    )
    after = ""
    while True:
        calls = connection.execute(read, {"after": after, "batch": BATCH}).all()
        if not calls:
            return
        rows: list[dict[str, Any]] = []
        for call_id, created_at, metadata in calls:
            if isinstance(metadata, str):
                metadata = json.loads(metadata)
            if isinstance(metadata, dict):
                rows += index_rows(call_id, created_at, metadata)
        if rows:
            connection.execute(write, rows)
        after = calls[-1][0]


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.create_index(
            "ix_call_metadata",
            "call",
            ["metadata"],
            postgresql_using="gin",
            postgresql_ops={"metadata": "jsonb_path_ops"},
        )
    op.drop_index("ix_call_metadata_key_value", table_name="call_metadata")
    op.drop_table("call_metadata")
