"""transcript_utterance: every final utterance once, with a full-text index per database; backfilled.
call_analytics: talk, silence, overlap and interruptions measured from each finalised recording.

SQLite: an FTS5 external-content table ``transcript_fts`` (porter stemming, unicode61 without
diacritics, prefix indexes for 2 and 3 characters) kept in sync by triggers. PostgreSQL: a text search
configuration ``switchboard_search`` (english, with ``unaccent`` when this server has the extension),
a stored generated column ``search_document = to_tsvector('switchboard_search', text)`` and its GIN index.

The backfill reads every transcript event in (call, seq) order and keeps the first copy of each
utterance (the n-th identical utterance of the webhooks is the n-th of the listen socket), as the
service does when it stores events; final transcripts without an utterance key (the qualified type
``transcript[transcriptType="final"]``, and ended calls before 0008) get theirs.

Every finalised recording gets a ``pending`` analytics row: the analytics worker measures them one by
one after the upgrade.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05 08:00:00
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from advanced_alchemy.types import DateTimeUTC
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 2000  # events read at a time: memory stays flat on a big timeline table
TRANSCRIPT_TYPES = ("transcript", 'transcript[transcriptType="final"]')
_SPACES = re.compile(r"\s+")
# JSON on SQLite, JSONB on PostgreSQL (what advanced-alchemy's JsonB type maps to).
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

SQLITE_FTS = (
    "CREATE VIRTUAL TABLE transcript_fts USING fts5(text, content='transcript_utterance', content_rowid='id', "
    "tokenize='porter unicode61 remove_diacritics 2', prefix='2 3')",
    "CREATE TRIGGER transcript_fts_insert AFTER INSERT ON transcript_utterance BEGIN "
    "INSERT INTO transcript_fts (rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER transcript_fts_delete AFTER DELETE ON transcript_utterance BEGIN "
    "INSERT INTO transcript_fts (transcript_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER transcript_fts_update AFTER UPDATE OF text ON transcript_utterance BEGIN "
    "INSERT INTO transcript_fts (transcript_fts, rowid, text) VALUES ('delete', old.id, old.text); "
    "INSERT INTO transcript_fts (rowid, text) VALUES (new.id, new.text); END",
)
# Stored, not only indexed: ranking reads each match's vector, and computing it again per row (parsing,
# unaccent, stemming) was most of a common word's search time.
POSTGRESQL_DOCUMENT = (
    "ALTER TABLE transcript_utterance ADD COLUMN search_document tsvector "
    "GENERATED ALWAYS AS (to_tsvector('switchboard_search'::regconfig, text)) STORED"
)
POSTGRESQL_INDEX = "CREATE INDEX ix_transcript_utterance_search ON transcript_utterance USING gin (search_document)"


def transcript_key(role: str, text: str) -> str:
    """Frozen copy of ``service.calls.events.transcript_key`` (migrations never import the service)."""
    normalized = _SPACES.sub(" ", text.strip().lower())
    return f"transcript:{role}:{hashlib.sha256(normalized.encode()).hexdigest()[:16]}"


def upgrade() -> None:
    op.create_table(
        "transcript_utterance",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("utterance", sa.String(length=64), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("occurred_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"], ["call.id"], name=op.f("fk_transcript_utterance_call_id_call"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transcript_utterance")),
        sa.UniqueConstraint("call_id", "utterance", "ordinal", name=op.f("uq_transcript_utterance_call_id")),
    )
    op.create_index("ix_transcript_utterance_call_id_seq", "transcript_utterance", ["call_id", "seq"])
    if op.get_context().dialect.name == "postgresql":
        _postgresql_index()
    else:
        for statement in SQLITE_FTS:
            op.execute(statement)
    _backfill()
    _call_analytics()


def _call_analytics() -> None:
    op.create_table(
        "call_analytics",
        sa.Column("call_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("customer_talk_seconds", sa.Float(), nullable=True),
        sa.Column("customer_silence_seconds", sa.Float(), nullable=True),
        sa.Column("assistant_talk_seconds", sa.Float(), nullable=True),
        sa.Column("assistant_silence_seconds", sa.Float(), nullable=True),
        sa.Column("overlap_seconds", sa.Float(), nullable=True),
        sa.Column("longest_silence_seconds", sa.Float(), nullable=True),
        sa.Column("customer_interruptions", sa.Integer(), nullable=True),
        sa.Column("assistant_interruptions", sa.Integer(), nullable=True),
        sa.Column("talk_ratio", sa.Float(), nullable=True),
        sa.Column("analyzed_seconds", sa.Float(), nullable=True),
        sa.Column("activity", JSON, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lease_until", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("completed_at", DateTimeUTC(timezone=True), nullable=True),
        sa.Column("created_at", DateTimeUTC(timezone=True), nullable=False),
        sa.Column("updated_at", DateTimeUTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"], ["call.id"], name=op.f("fk_call_analytics_call_id_call"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("call_id", name=op.f("pk_call_analytics")),
    )
    op.create_index("ix_call_analytics_status_lease_until", "call_analytics", ["status", "lease_until"])
    # The recordings finalised before this revision: measured by the worker after the upgrade. The
    # timestamps are the recording's own (copied by the database, as the backfill above does).
    op.execute(
        "INSERT INTO call_analytics (call_id, status, activity, attempts, created_at, updated_at) "
        "SELECT call_id, 'pending', '{}', 0, updated_at, updated_at FROM recording "
        "WHERE status IN ('completed', 'partial')"
    )


def _postgresql_index() -> None:
    """The search configuration (accent-insensitive when ``unaccent`` can be had) and its GIN index."""
    connection = op.get_bind()
    op.execute("CREATE TEXT SEARCH CONFIGURATION switchboard_search (COPY = english)")
    try:
        with connection.begin_nested():
            op.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
    except sa.exc.DBAPIError:
        # Not installed on this server, or not allowed to this role: accents then count (see README).
        pass
    else:
        op.execute(
            "ALTER TEXT SEARCH CONFIGURATION switchboard_search "
            "ALTER MAPPING FOR hword, hword_part, word WITH unaccent, english_stem"
        )
    op.execute(POSTGRESQL_DOCUMENT)
    op.execute(POSTGRESQL_INDEX)


def _final_transcript(payload: Any) -> tuple[str, str] | None:
    if isinstance(payload, str):
        payload = json.loads(payload)
    if not isinstance(payload, dict) or payload.get("transcriptType") != "final":
        return None
    role, text = payload.get("role"), payload.get("transcript")
    return (role, text) if isinstance(role, str) and isinstance(text, str) else None


def _backfill() -> None:
    """Index the stored final transcripts, in keyset batches of ``BATCH`` events in (call, seq) order."""
    connection = op.get_bind()
    read = sa.text(
        "SELECT id, call_id, seq, source, utterance, payload FROM call_event "
        "WHERE type IN :types AND (call_id > :call_id OR (call_id = :call_id AND seq > :seq)) "
        "ORDER BY call_id, seq LIMIT :batch"
    ).bindparams(sa.bindparam("types", TRANSCRIPT_TYPES, expanding=True))
    key_event = sa.text("UPDATE call_event SET utterance = :utterance WHERE id = :id")
    # occurred_at is copied by the database: byte for byte the event's own value on either backend.
    write = sa.text(
        "INSERT INTO transcript_utterance (call_id, seq, utterance, ordinal, role, text, occurred_at) "
        "SELECT call_id, seq, CAST(:utterance AS VARCHAR(64)), CAST(:ordinal AS INTEGER), "
        "CAST(:role AS VARCHAR(16)), CAST(:text AS TEXT), occurred_at FROM call_event WHERE id = :id"
    )
    call_id, seq = "", 0
    counts: dict[tuple[str, str], int] = {}  # (utterance, source) -> copies so far, in the current call
    indexed: set[tuple[str, int]] = set()  # (utterance, ordinal) stored, in the current call
    while True:
        rows = connection.execute(read, {"call_id": call_id, "seq": seq, "batch": BATCH}).all()
        if not rows:
            return
        keys, inserts = [], []
        for event_id, event_call_id, event_seq, source, utterance, payload in rows:
            if event_call_id != call_id:
                counts.clear()
                indexed.clear()
            call_id, seq = event_call_id, event_seq
            said = _final_transcript(payload)
            if said is None:
                continue
            key = transcript_key(*said)
            if utterance != key:
                keys.append({"utterance": key, "id": event_id})
            ordinal = counts[(key, source)] = counts.get((key, source), 0) + 1
            if (key, ordinal) not in indexed:
                indexed.add((key, ordinal))
                inserts.append({"utterance": key, "ordinal": ordinal, "role": said[0], "text": said[1], "id": event_id})
        if keys:
            connection.execute(key_event, keys)
        if inserts:
            connection.execute(write, inserts)


def downgrade() -> None:
    op.drop_index("ix_call_analytics_status_lease_until", table_name="call_analytics")
    op.drop_table("call_analytics")
    if op.get_context().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_transcript_utterance_search")
        op.execute("ALTER TABLE transcript_utterance DROP COLUMN IF EXISTS search_document")
        # unaccent stays: other databases objects may use it, and it costs nothing unused.
        op.execute("DROP TEXT SEARCH CONFIGURATION IF EXISTS switchboard_search")
    else:
        for trigger in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS transcript_fts_{trigger}")
        op.execute("DROP TABLE IF EXISTS transcript_fts")
    op.drop_index("ix_transcript_utterance_call_id_seq", table_name="transcript_utterance")
    op.drop_table("transcript_utterance")
