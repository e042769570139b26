"""Statements on the ``call`` row and its ``call_metadata`` index (used by ``calls.rows.CallRows``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, bindparam, delete, insert, inspect, select, update

from service.db.models import Call, CallMetadata, ErasedCall
from service.db.statements import insert_ignoring_conflicts, table_of

CALL = table_of(Call)
# (attribute, column) of every mapped column: ``call_metadata`` is stored in the ``metadata`` column.
FIELDS: tuple[tuple[str, Column[Any]], ...] = tuple(
    (attribute.key, attribute.columns[0])  # type: ignore[misc]
    for attribute in inspect(Call).column_attrs
)
_SELECT = select(*(column for _, column in FIELDS))
BY_ID = _SELECT.where(CALL.c.id == bindparam("call_id"))
BY_IDS = _SELECT.where(CALL.c.id.in_(bindparam("call_ids", expanding=True))).order_by(CALL.c.id)
# FOR UPDATE, not the weaker FOR NO KEY UPDATE: that one lets the foreign-key checks of concurrent
# inserts (events, injections) key-share the row meanwhile, which makes PostgreSQL track the row's
# lockers as a MultiXact; measured on the rules path: p99 30-40 ms (one run 213 ms) against 11-15 ms.
LOCK_BY_ID, LOCK_BY_IDS = BY_ID.with_for_update(), BY_IDS.with_for_update()
IDS_PRESENT = select(CALL.c.id).where(CALL.c.id.in_(bindparam("call_ids", expanding=True)))
ERASED = table_of(ErasedCall)
IDS_ERASED = select(ERASED.c.id).where(ERASED.c.id.in_(bindparam("call_ids", expanding=True)))
# SET what the parameters name besides ``call_id``: compiled once per set of changed columns.
UPDATE = update(CALL).where(CALL.c.id == bindparam("call_id"))
NEW_ROW = ("id", "status", "origin", "customer", "metadata", "listen_auth", "control_auth", "last_event_seq")
INSERT_NEW = insert_ignoring_conflicts(CALL, (*NEW_ROW, "created_at", "updated_at"), ("id",))
# The calls of several ids locked in id order (PostgreSQL), as every writer of several calls locks them.
LOCK_IN_ORDER = (
    select(CALL.c.id).where(CALL.c.id.in_(bindparam("call_ids", expanding=True))).order_by(CALL.c.id).with_for_update()
)

METADATA = table_of(CallMetadata)  # the metadata filter index
DELETE_METADATA = delete(METADATA).where(METADATA.c.call_id.in_(bindparam("call_ids", expanding=True)))
INSERT_METADATA = insert(METADATA)
