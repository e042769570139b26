"""``call ended`` is logged once, when the transaction that ended the call commits."""

from __future__ import annotations

import datetime as dt

import pytest
from structlog.testing import capture_logs

from service.calls.tracking import announce_status
from service.db.engine import Database
from service.db.models import Call

STARTED = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


class Abandoned(Exception):
    """Rolls the unit of work back."""


def ended_call() -> Call:
    return Call(
        id="call-ended",
        type="outboundPhoneCall",
        status="ended",
        ended_reason="customer-ended-call",
        assistant_id="asst-1",
        started_at=STARTED,
        ended_at=STARTED + dt.timedelta(seconds=83.5),
    )


async def end_then_abandon(db: Database) -> None:
    async with db.write() as session:
        await announce_status(session, ended_call(), "in-progress")
        raise Abandoned  # rolled back: the call did not end


async def test_call_ended_is_logged_once_after_commit(database_url: str) -> None:
    db = Database(database_url)
    try:
        with capture_logs() as logs:
            with pytest.raises(Abandoned):
                await end_then_abandon(db)
            assert [entry for entry in logs if entry["event"] == "call ended"] == []
            async with db.write() as session:
                await announce_status(session, ended_call(), "in-progress")
            async with db.write() as session:
                await announce_status(session, ended_call(), "ended")  # already ended: no second line
    finally:
        await db.dispose()
    assert [entry for entry in logs if entry["event"] == "call ended"] == [
        {
            "event": "call ended",
            "log_level": "info",
            "call_id": "call-ended",
            "ended_reason": "customer-ended-call",
            "duration_seconds": 83.5,
            "type": "outboundPhoneCall",
            "assistant_id": "asst-1",
        }
    ]
