"""Reading a call's analytics."""

from __future__ import annotations

from sqlalchemy import select

from service.db.engine import Database
from service.db.models import Call, CallAnalytics
from service.errors import NotFoundError


class AnalyticsService:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def get(self, call_id: str) -> CallAnalytics | None:
        """The call's analytics row (None: not analysed yet); 404 for an unknown call."""
        async with self._db.read() as session:
            row = (
                await session.execute(
                    select(Call.id, CallAnalytics)
                    .outerjoin(CallAnalytics, CallAnalytics.call_id == Call.id)
                    .where(Call.id == call_id)
                )
            ).one_or_none()
        if row is None:
            raise NotFoundError(f"no call with id {call_id!r}")
        analytics: CallAnalytics | None = row[1]
        return analytics
