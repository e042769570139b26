"""Delivery history: outbound webhook deliveries (``webhook_delivery``, their attempts cascading) and the
tap's forwards (``upstream_forward``) are kept while pending, and for ``SWITCHBOARD_DELIVERY_HISTORY``
after their last attempt once settled (delivered or abandoned), then deleted by the lifecycle sweep.

Each table is read through its due index ``(status, next_attempt_at)``: a settled row's
``next_attempt_at`` is when it was last attempted. At most ``batch`` rows per table go per statement,
so no replica holds a long transaction; a full batch is followed by another at once.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, select

from service.db.engine import Database
from service.db.models import UpstreamForward, WebhookDelivery, utcnow

SETTLED = ("delivered", "abandoned")
PURGE_BATCH = 1000


async def purge_settled(db: Database, *, older_than: float, batch: int = PURGE_BATCH) -> int:
    """Delete settled deliveries and forwards last attempted more than ``older_than`` seconds ago;
    how many rows went."""
    cutoff = utcnow() - dt.timedelta(seconds=older_than)
    purged = 0
    for model in (WebhookDelivery, UpstreamForward):
        while True:
            oldest = (
                select(model.id)
                .where(model.status.in_(SETTLED), model.next_attempt_at < cutoff)
                .order_by(model.next_attempt_at)
                .limit(batch)
            )
            async with db.write() as session:
                ids = list((await session.scalars(oldest)).all())
                if ids:
                    await session.execute(delete(model).where(model.id.in_(ids)))
            purged += len(ids)
            if len(ids) < batch:
                break
    return purged
