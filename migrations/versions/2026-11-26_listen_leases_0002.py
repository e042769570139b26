"""Listen leases: which replica records a live call, and until when.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 10:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call") as batch_op:
        batch_op.add_column(sa.Column("listen_owner", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("listen_lease_until", DateTimeUTC(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("call") as batch_op:
        batch_op.drop_column("listen_lease_until")
        batch_op.drop_column("listen_owner")
