"""Statements on the listen lease columns of ``call`` (``listen_owner``, ``listen_lease_until``)."""

from __future__ import annotations

from sqlalchemy import bindparam, or_, select, update

from service.db.stores.calls import CALL

_OURS = CALL.c.listen_owner == bindparam("owner")
# Take the lease if it is free, expired, or already ours.
ACQUIRE = (
    update(CALL)
    .where(
        CALL.c.id == bindparam("call_id"),
        or_(CALL.c.listen_owner.is_(None), _OURS, CALL.c.listen_lease_until < bindparam("now")),
    )
    .values(listen_owner=bindparam("owner"), listen_lease_until=bindparam("until"))
)
# The rows are locked in id order first (PostgreSQL; SQLite has one writer), as every writer of
# several calls does: an UPDATE of an IN list locks them in whatever order its plan visits them.
_OURS_IN_ORDER = (
    select(CALL.c.id)
    .where(CALL.c.id.in_(bindparam("call_ids", expanding=True)), _OURS)
    .order_by(CALL.c.id)
    .with_for_update()
)
RENEW = (
    update(CALL)
    .where(CALL.c.id.in_(_OURS_IN_ORDER.scalar_subquery()), _OURS)
    .values(listen_lease_until=bindparam("until"))
    .returning(CALL.c.id)
)
RELEASE = (
    update(CALL).where(CALL.c.id == bindparam("call_id"), _OURS).values(listen_owner=None, listen_lease_until=None)
)
# Take over the lease of a dead process (the exact owner it had), whatever its expiry.
TAKE_OVER = (
    update(CALL)
    .where(CALL.c.id == bindparam("call_id"), CALL.c.listen_owner == bindparam("dead"))
    .values(listen_owner=bindparam("owner"), listen_lease_until=bindparam("until"))
)
