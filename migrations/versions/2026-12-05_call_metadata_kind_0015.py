"""``ix_call_metadata_key_value`` ends with ``kind``: the calls a ``metadata.<key>`` filter matches (a
transcript search's ``IN`` list, up to every call of a team) are read from the index alone, not a table
row each.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 14:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_call_metadata_key_value"


def upgrade() -> None:
    op.drop_index(INDEX, table_name="call_metadata")
    op.create_index(INDEX, "call_metadata", ["key", "value", "created_at", "call_id", "kind"])


def downgrade() -> None:
    op.drop_index(INDEX, table_name="call_metadata")
    op.create_index(INDEX, "call_metadata", ["key", "value", "created_at", "call_id"])
