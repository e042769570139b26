"""An index on call.updated_at: the console's change stream reads the calls changed in the last seconds.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 13:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_call_updated_at", "call", ["updated_at"])


def downgrade() -> None:
    op.drop_index("ix_call_updated_at", table_name="call")
