"""The tap (contract section 9): ``call.upstream`` (the customer's own server for the call) and
``upstream_forward``, the durable queue of server messages passed on to it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05 08:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op
from sqlalchemy.dialects import postgresql

# JSON on SQLite, JSONB on PostgreSQL (what advanced-alchemy's JsonB type maps to).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call", schema=None) as batch_op:
        batch_op.add_column(sa.Column("upstream", JSON, nullable=True))
    op.create_table(
        "upstream_forward",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=True),
        sa.Column("message_type", sa.String(length=128), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("last_status_code", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"], ["call.id"], name=op.f("fk_upstream_forward_call_id_call"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstream_forward")),
    )
    with op.batch_alter_table("upstream_forward", schema=None) as batch_op:
        batch_op.create_index("ix_upstream_forward_due", ["status", "next_attempt_at"], unique=False)
        batch_op.create_index("ix_upstream_forward_call_id", ["call_id", "status", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("upstream_forward", schema=None) as batch_op:
        batch_op.drop_index("ix_upstream_forward_call_id")
        batch_op.drop_index("ix_upstream_forward_due")
    op.drop_table("upstream_forward")
    with op.batch_alter_table("call", schema=None) as batch_op:
        batch_op.drop_column("upstream")
