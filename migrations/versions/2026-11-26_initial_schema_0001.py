"""Initial schema: calls, call events, recordings and their segments, injections.

Revision ID: 0001
Revises:
Create Date: 2026-11-26 09:51:07.257645
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from advanced_alchemy.types import GUID, DateTimeUTC
from sqlalchemy.dialects import postgresql

# JSON on SQLite, JSONB on PostgreSQL (what advanced-alchemy's JsonB type maps to).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "call",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("ended_reason", sa.Text(), nullable=True),
        sa.Column("assistant_id", sa.String(length=64), nullable=True),
        sa.Column("phone_number_id", sa.String(length=64), nullable=True),
        sa.Column("customer", JSON, nullable=False),
        sa.Column("customer_number", sa.String(length=64), nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("listen_url", sa.Text(), nullable=True),
        sa.Column("control_url", sa.Text(), nullable=True),
        sa.Column("listen_auth", sa.Boolean(), nullable=False),
        sa.Column("control_auth", sa.Boolean(), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("started_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("ended_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("last_event_seq", sa.Integer(), nullable=False),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call")),
    )
    with op.batch_alter_table("call", schema=None) as batch_op:
        batch_op.create_index("ix_call_assistant_id", ["assistant_id"], unique=False)
        batch_op.create_index(
            "ix_call_created_at_id", ["created_at", "id"], unique=False
        )
        batch_op.create_index(
            "ix_call_customer_number", ["customer_number"], unique=False
        )
        batch_op.create_index("ix_call_status", ["status"], unique=False)

    op.create_table(
        "call_event",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("occurred_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("received_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["call.id"],
            name=op.f("fk_call_event_call_id_call"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_event")),
        sa.UniqueConstraint("call_id", "seq", name=op.f("uq_call_event_call_id")),
    )
    op.create_table(
        "injection",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("body", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("sent_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["call.id"],
            name=op.f("fk_injection_call_id_call"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_injection")),
    )
    with op.batch_alter_table("injection", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_injection_call_id"), ["call_id"], unique=False
        )

    op.create_table(
        "recording",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("encoding", sa.String(length=16), nullable=False),
        sa.Column("sample_rate", sa.Integer(), nullable=False),
        sa.Column("channels", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("gaps", JSON, nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("completed_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["call.id"],
            name=op.f("fk_recording_call_id_call"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recording")),
        sa.UniqueConstraint("call_id", name=op.f("uq_recording_call_id")),
    )
    op.create_table(
        "recording_segment",
        sa.Column("id", GUID(length=16), nullable=False),
        sa.Column("recording_id", GUID(length=16), nullable=False),
        sa.Column("index", sa.Integer(), nullable=False),
        sa.Column("storage_key", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("gap_before_bytes", sa.BigInteger(), nullable=False),
        sa.Column("started_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("ended_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("sa_orm_sentinel", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["recording_id"],
            ["recording.id"],
            name=op.f("fk_recording_segment_recording_id_recording"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_recording_segment")),
        sa.UniqueConstraint(
            "recording_id", "index", name=op.f("uq_recording_segment_recording_id")
        ),
    )


def downgrade() -> None:
    op.drop_table("recording_segment")
    op.drop_table("recording")
    with op.batch_alter_table("injection", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_injection_call_id"))

    op.drop_table("injection")
    op.drop_table("call_event")
    with op.batch_alter_table("call", schema=None) as batch_op:
        batch_op.drop_index("ix_call_status")
        batch_op.drop_index("ix_call_customer_number")
        batch_op.drop_index("ix_call_created_at_id")
        batch_op.drop_index("ix_call_assistant_id")

    op.drop_table("call")
