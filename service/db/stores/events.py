"""Statements on the timeline (``call_event``) and the call's event sequence."""

from __future__ import annotations

from sqlalchemy import bindparam, insert, update

from service.db.models import CallEvent
from service.db.statements import table_of
from service.db.stores.calls import CALL

INSERT_EVENTS = insert(table_of(CallEvent))
# Take ``count`` sequence numbers of each call at once: the new last number of each is returned. New
# events may bring utterances: the call's utterance ceiling is unknown again until it is settled
# (``service.fulltext.ceilings.settle_ceilings``), in this statement rather than one per utterance.
NUMBER = (
    update(CALL)
    .where(CALL.c.id.in_(bindparam("call_ids", expanding=True)))
    .values(
        last_event_seq=CALL.c.last_event_seq + bindparam("count"), updated_at=bindparam("now"), utterance_ceiling=None
    )
    .returning(CALL.c.id, CALL.c.last_event_seq)
)
