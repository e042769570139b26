"""The analytics queue, filled here: a recording finalised is a call to analyse (one row per call in
``call_analytics``, written in the finalising transaction; ``service.analytics`` works through it)."""

from __future__ import annotations

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.models import CallAnalytics, utcnow
from service.db.statements import table_of

_TABLE = table_of(CallAnalytics)
# A recording finalised again (a takeover resumed it) is analysed again, from scratch.
_QUEUE = text(
    "INSERT INTO call_analytics (call_id, status, activity, attempts, error, created_at, updated_at) "
    "VALUES (:call_id, :status, :activity, 0, :error, :now, :now) "
    "ON CONFLICT (call_id) DO UPDATE SET status = excluded.status, attempts = 0, lease_until = NULL, "
    "error = excluded.error, updated_at = excluded.updated_at"
).bindparams(
    bindparam("activity", type_=_TABLE.c.activity.type),
    bindparam("now", type_=_TABLE.c.created_at.type),
)
NO_AUDIO = "the recording holds no audio"


async def queue_analysis(session: AsyncSession, call_id: str, *, recording_status: str) -> None:
    """In the transaction that finalises the call's recording: analyse it (a failed recording, with no
    audio, has nothing to analyse and is marked failed at once)."""
    failed = recording_status == "failed"
    await session.execute(
        _QUEUE,
        {
            "call_id": call_id,
            "status": "failed" if failed else "pending",
            "activity": {},
            "error": NO_AUDIO if failed else None,
            "now": utcnow(),
        },
    )
