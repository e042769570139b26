"""``call ended`` is logged once, when the transaction that ended the call commits (the outbox's
subscriber to call changes logs it after the commit)."""

from __future__ import annotations

import datetime as dt

import pytest
from structlog.testing import capture_logs

from service.calls.announce import CallAnnouncer
from service.calls.changes import CallChange, CallChanges
from service.db.engine import Database
from service.db.models import Call
from service.logging import configure_logging

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


async def announce(db: Database, before: str, *, abandon: bool = False) -> None:
    """A transaction that records the call's end (from ``before``), as the call writer does."""
    changes = CallChanges()
    changes.subscribe(CallAnnouncer())
    async with db.write() as session:
        after = await changes.stage(session, [CallChange("call-ended", "webhook", [], ended_call(), before)])
        if abandon:
            raise Abandoned  # rolled back: the call did not end
    changes.committed(after)


async def test_call_ended_is_logged_once_after_commit(database_url: str) -> None:
    configure_logging("info")  # another test may have left a higher level, which filters before capture
    db = Database(database_url)
    try:
        with capture_logs() as logs:
            with pytest.raises(Abandoned):
                await announce(db, "in-progress", abandon=True)
            assert [entry for entry in logs if entry["event"] == "call ended"] == []
            await announce(db, "in-progress")
            await announce(db, "ended")  # already ended: no second line
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
