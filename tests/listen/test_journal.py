"""The listen sessions' shared event journal while the database is away."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, cast

from sqlalchemy.exc import OperationalError

from service.calls.events import NewEvent
from service.listen.journal import EventJournal


class UnreachableDatabase:
    """Every write transaction fails as an unreachable server does, after a connect attempt's time."""

    def __init__(self) -> None:
        self.attempts = 0

    @contextlib.asynccontextmanager
    async def write(self, urgent: bool = False) -> AsyncIterator[Any]:
        self.attempts += 1
        await asyncio.sleep(0.01)
        if self.attempts > 0:  # always: the yield below only makes this a generator
            raise OperationalError("connect", {}, ConnectionRefusedError())
        yield None


async def test_an_outage_costs_one_transaction_per_pass_not_one_per_call() -> None:
    """A batch that failed because the database is away is kept whole and retried later: trying each of
    200 calls on its own would take 200 failed connects (each up to a connect timeout) per pass, and hold
    every ending session's flush meanwhile."""
    db = UnreachableDatabase()
    journal = EventJournal(cast(Any, db), cast(Any, None))
    for n in range(200):
        journal.add(f"call-{n:03d}", NewEvent("listen", "transcript", {"n": n}))
    try:
        assert await journal.flush("call-199") is False
        assert db.attempts == 1
        assert journal.pending("call-000") == 1, "the events wait for the database"
    finally:
        before_close = db.attempts
        await journal.close()
    assert db.attempts - before_close == 1, "and one last transaction for them all at shutdown"
