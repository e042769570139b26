"""An index on recording.status: every replica looks up the recordings still open every few seconds
(calls to adopt), which scanned every recording ever made.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 16:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_recording_status", "recording", ["status"])


def downgrade() -> None:
    op.drop_index("ix_recording_status", table_name="recording")
