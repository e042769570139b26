"""call_event.utterance: a final transcript's utterance key, indexed, so that the rules count the
identical utterances before one (the key of a ``once: false`` firing) without reading the call's whole
transcript, which grew with the call inside the webhook's write transaction.

Rows of calls still live are filled in; ended calls need no more firings.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 16:40:00
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LIVE = ("queued", "ringing", "in-progress", "forwarding")
_SPACES = re.compile(r"\s+")


def utterance_key(kind: str, payload: Any) -> str | None:
    """Frozen copy of ``service.calls.events.utterance_key`` as of this revision (a migration keeps
    producing what it produced when written, whatever the service's code becomes)."""
    if kind != "transcript" or not isinstance(payload, dict) or payload.get("transcriptType") != "final":
        return None
    role, text = payload.get("role"), payload.get("transcript")
    if not isinstance(role, str) or not isinstance(text, str):
        return None
    normalized = _SPACES.sub(" ", text.strip().lower())
    return f"transcript:{role}:{hashlib.sha256(normalized.encode()).hexdigest()[:16]}"


def upgrade() -> None:
    op.add_column("call_event", sa.Column("utterance", sa.String(64), nullable=True))
    op.create_index(
        "ix_call_event_utterance",
        "call_event",
        ["call_id", "utterance", "source", "seq"],
        sqlite_where=sa.text("utterance IS NOT NULL"),
        postgresql_where=sa.text("utterance IS NOT NULL"),
    )
    connection = op.get_bind()
    events = sa.table(
        "call_event",
        sa.column("id", sa.BigInteger),
        sa.column("call_id", sa.String),
        sa.column("type", sa.String),
        sa.column("payload", sa.JSON),
        sa.column("utterance", sa.String),
    )
    calls = sa.table("call", sa.column("id", sa.String), sa.column("status", sa.String))
    live = sa.select(calls.c.id).where(calls.c.status.in_(LIVE))
    rows = connection.execute(
        sa.select(events.c.id, events.c.payload).where(events.c.type == "transcript", events.c.call_id.in_(live))
    ).all()
    for row_id, payload in rows:
        key = utterance_key("transcript", json.loads(payload) if isinstance(payload, str) else payload)
        if key is not None:
            connection.execute(sa.update(events).where(events.c.id == row_id).values(utterance=key))


def downgrade() -> None:
    op.drop_index("ix_call_event_utterance", table_name="call_event")
    op.drop_column("call_event", "utterance")
