"""``call.utterance_ceiling``: at least the id of the call's newest indexed utterance, so that a search
limited to calls created long ago finds where their utterances end with one read per call (a column of
the call row) instead of a look-up in ``transcript_utterance`` per call. Backfilled exactly.

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
        "(SELECT max(u.id) FROM transcript_utterance AS u WHERE u.call_id = call.id) "
        "WHERE EXISTS (SELECT 1 FROM transcript_utterance AS u WHERE u.call_id = call.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("call", schema=None) as batch_op:
        batch_op.drop_column("utterance_ceiling")
