"""Legal hold: a held call is never erased, neither on request nor by the retention sweep."""

from __future__ import annotations

from sqlalchemy import select, update

from service.db.engine import Database
from service.db.models import Call
from service.errors import ConflictError, NotFoundError


async def set_legal_hold(db: Database, call_id: str, *, hold: bool, reason: str | None) -> None:
    """Hold or release the call: 404 when unknown, 409 once its erasure has started."""
    async with db.write() as session:
        query = select(Call.erasing_until).where(Call.id == call_id)
        row = (await session.execute(query if db.is_sqlite else query.with_for_update())).one_or_none()
        if row is None:
            raise NotFoundError(f"no call with id {call_id!r}")
        if row.erasing_until is not None:
            raise ConflictError(f"call {call_id!r} is being erased")
        await session.execute(update(Call).where(Call.id == call_id).values(legal_hold=hold, legal_hold_reason=reason))
