"""Statements on ``recording`` and ``recording_segment`` (the listen path's bookkeeping)."""

from __future__ import annotations

from sqlalchemy import bindparam, insert, select, update

from service.db.models import Recording, RecordingSegment
from service.db.statements import insert_ignoring_conflicts, table_of

RECORDING = table_of(Recording)
SEGMENT = table_of(RecordingSegment)
NEW_RECORDING = ("id", "call_id", "status", "encoding", "sample_rate", "channels", "bytes", "gaps", "started_at")
INSERT_RECORDING = insert_ignoring_conflicts(RECORDING, (*NEW_RECORDING, "created_at", "updated_at"), ("call_id",))
INSERT_SEGMENT = insert(SEGMENT)
CLOSE_SEGMENT = update(SEGMENT).where(SEGMENT.c.id == bindparam("segment_id"))  # SET: the other parameters
SEGMENTS_OF = (
    select(SEGMENT.c.storage_key, SEGMENT.c.bytes, SEGMENT.c.sha256, SEGMENT.c.id, SEGMENT.c.status)
    .join(RECORDING, RECORDING.c.id == SEGMENT.c.recording_id)
    .where(RECORDING.c.call_id == bindparam("call_id"))
    .order_by(SEGMENT.c.index)
)
RECORDING_OF = select(RECORDING.c.id, RECORDING.c.gaps, RECORDING.c.sample_rate, RECORDING.c.channels).where(
    RECORDING.c.call_id == bindparam("call_id")
)
LOCK_RECORDING = RECORDING_OF.with_for_update()
FINALIZE = update(RECORDING).where(RECORDING.c.id == bindparam("recording_id"))  # SET: the other parameters
