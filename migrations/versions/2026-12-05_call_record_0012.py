"""The complete call record (contract section 10): what Vapi reports about a finished call (cost,
costs, analysis, structured outputs, ended message, carrier, squad and workflow), and list indexes for
the ``endedReason``, ``phoneNumberId`` and ``type`` filters, each ending with the sort key; when Vapi
spoke a say (``injection.spoken_at``, ``speech_ended_at``); ``vapi_recording``, Switchboard's copy of
Vapi's stereo recording and the durable marker of its download; ``call.vapi_created_at`` (indexed), from
which the catch-up lists the calls Vapi created since.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op
from sqlalchemy.dialects import postgresql

# JSON on SQLite, JSONB on PostgreSQL (what advanced-alchemy's JsonB type maps to).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    ("ended_message", sa.Text()),
    ("cost", sa.Float()),
    ("costs", JSON),
    ("analysis", JSON),
    ("structured_outputs", JSON),
    ("phone_call_provider", sa.String(length=32)),
    ("phone_call_provider_id", sa.String(length=128)),
    ("squad_id", sa.String(length=64)),
    ("workflow_id", sa.String(length=64)),
    ("reported_at", DateTimeUTC(timezone=True)),
    ("vapi_created_at", DateTimeUTC(timezone=True)),
)
INJECTION_COLUMNS = ("spoken_at", "speech_ended_at")
# Filter column → its list index (the filter, then the newest-first sort key).
INDEXES = {
    "ended_reason": "ix_call_ended_reason_created_at",
    "phone_number_id": "ix_call_phone_number_id_created_at",
    "type": "ix_call_type_created_at",
}


def upgrade() -> None:
    with op.batch_alter_table("call", schema=None) as batch_op:
        for name, column_type in COLUMNS:
            batch_op.add_column(sa.Column(name, column_type, nullable=True))
    for column, index in INDEXES.items():
        op.create_index(index, "call", [column, "created_at", "id"])
    op.create_index("ix_call_vapi_created_at", "call", ["vapi_created_at"])
    with op.batch_alter_table("injection", schema=None) as batch_op:
        for name in INJECTION_COLUMNS:
            batch_op.add_column(sa.Column(name, DateTimeUTC(timezone=True), nullable=True))
    op.create_table(
        "vapi_recording",
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=True),
        sa.Column("content_type", sa.String(length=100), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("stored_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"], ["call.id"], name=op.f("fk_vapi_recording_call_id_call"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_vapi_recording")),
    )
    op.create_index("ix_vapi_recording_due", "vapi_recording", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_vapi_recording_due", table_name="vapi_recording")
    op.drop_table("vapi_recording")
    with op.batch_alter_table("injection", schema=None) as batch_op:
        for name in reversed(INJECTION_COLUMNS):
            batch_op.drop_column(name)
    op.drop_index("ix_call_vapi_created_at", table_name="call")
    for index in INDEXES.values():
        op.drop_index(index, table_name="call")
    with op.batch_alter_table("call", schema=None) as batch_op:
        for name, _ in reversed(COLUMNS):
            batch_op.drop_column(name)
