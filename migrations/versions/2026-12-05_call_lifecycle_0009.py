"""Recordings lifecycle: legal hold and the erasure tombstone on calls, the archive format on recordings.

- ``call.legal_hold`` / ``legal_hold_reason``: a held call is never erased.
- ``call.erasing_until``: set when an erasure starts (before any storage object is deleted), it is the
  tombstone a sweep finishes after a crash, and the eraser's claim.
- ``recording.format`` (``pcm`` | ``flac``), ``stored_bytes`` (bytes at rest when not ``bytes``) and
  ``archiving_until`` (the archiver's claim); ``listening_key`` / ``listening_bytes``: the Opus
  listening copy, made on demand.
- ``webhook_delivery.call_id`` (indexed, filled in for the rows already stored): the call an outbound
  event is about, so that erasing a call finds its deliveries without reading every payload.
- Indexes for the sweeps: calls by ``ended_at`` (retention) and ``erasing_until``; recordings by
  ``(format, status)`` (the archiver's queue).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05 07:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ALTER TABLE (both databases can add and drop these columns): a batch "copy and move" of
    # ``call`` on SQLite would drop the table, and with foreign keys on that cascades to every timeline.
    op.add_column("call", sa.Column("legal_hold", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("call", sa.Column("legal_hold_reason", sa.Text(), nullable=True))
    op.add_column("call", sa.Column("erasing_until", DateTimeUTC(timezone=True), nullable=True))
    op.create_index("ix_call_ended_at", "call", ["ended_at"])
    op.create_index("ix_call_erasing_until", "call", ["erasing_until"])
    op.add_column("recording", sa.Column("format", sa.String(8), nullable=False, server_default="pcm"))
    op.add_column("recording", sa.Column("stored_bytes", sa.BigInteger(), nullable=True))
    op.add_column("recording", sa.Column("archiving_until", DateTimeUTC(timezone=True), nullable=True))
    op.add_column("recording", sa.Column("listening_key", sa.Text(), nullable=True))
    op.add_column("recording", sa.Column("listening_bytes", sa.BigInteger(), nullable=True))
    op.create_index("ix_recording_format_status", "recording", ["format", "status"])
    op.add_column("webhook_delivery", sa.Column("call_id", sa.String(64), nullable=True))
    _fill_delivery_call_ids()
    op.create_index("ix_webhook_delivery_call_id", "webhook_delivery", ["call_id"])


def _fill_delivery_call_ids() -> None:
    """``data.id`` of ``call.*`` events, ``data.callId`` of the others (as ``deliveries.outbox.call_of``)."""
    if op.get_bind().dialect.name == "postgresql":
        call_id, other_id = "payload->'data'->>'id'", "payload->'data'->>'callId'"
    else:
        call_id, other_id = "json_extract(payload, '$.data.id')", "json_extract(payload, '$.data.callId')"
    op.execute(
        f"UPDATE webhook_delivery SET call_id = CASE WHEN event_type LIKE 'call.%' THEN {call_id} "  # noqa: S608
        f"ELSE {other_id} END"
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_delivery_call_id", table_name="webhook_delivery")
    op.drop_column("webhook_delivery", "call_id")
    op.drop_index("ix_recording_format_status", table_name="recording")
    for column in ("listening_bytes", "listening_key", "archiving_until", "stored_bytes", "format"):
        op.drop_column("recording", column)
    op.drop_index("ix_call_erasing_until", table_name="call")
    op.drop_index("ix_call_ended_at", table_name="call")
    for column in ("erasing_until", "legal_hold_reason", "legal_hold"):
        op.drop_column("call", column)
