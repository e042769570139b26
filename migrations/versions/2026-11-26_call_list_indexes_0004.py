"""Call list indexes that end with the sort key; a GIN index on metadata (PostgreSQL).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 11:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REPLACED = {
    "ix_call_status": ("ix_call_status_created_at", "status"),
    "ix_call_customer_number": ("ix_call_customer_number_created_at", "customer_number"),
    "ix_call_assistant_id": ("ix_call_assistant_id_created_at", "assistant_id"),
}


def upgrade() -> None:
    for old, (new, column) in REPLACED.items():
        op.create_index(new, "call", [column, "created_at", "id"])
        op.drop_index(old, table_name="call")
    if op.get_context().dialect.name == "postgresql":
        op.create_index(
            "ix_call_metadata", "call", ["metadata"], postgresql_using="gin", postgresql_ops={"metadata": "jsonb_path_ops"}
        )


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.drop_index("ix_call_metadata", table_name="call")
    for old, (new, column) in REPLACED.items():
        op.create_index(old, "call", [column])
        op.drop_index(new, table_name="call")
