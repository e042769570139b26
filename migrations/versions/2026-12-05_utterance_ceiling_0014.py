"""``call.utterance_ceiling``: the id of the call's newest indexed utterance, so that a search limited
to calls created long ago finds where their utterances end with one read per call (a column of the call
row) instead of a look-up in ``transcript_utterance`` per call. Backfilled exactly (0: no utterance);
cleared by every event stored later and settled again by the lifecycle sweep, which finds the calls to
settle through a partial index.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 14:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("call", schema=None) as batch_op:
        batch_op.add_column(sa.Column("utterance_ceiling", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE call SET utterance_ceiling = "
        "coalesce((SELECT max(u.id) FROM transcript_utterance AS u WHERE u.call_id = call.id), 0)"
    )
    op.create_index(
        "ix_call_unsettled_ceiling",
        "call",
        ["updated_at"],
        sqlite_where=sa.text("utterance_ceiling IS NULL"),
        postgresql_where=sa.text("utterance_ceiling IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_call_unsettled_ceiling", table_name="call")
    with op.batch_alter_table("call", schema=None) as batch_op:
        batch_op.drop_column("utterance_ceiling")
