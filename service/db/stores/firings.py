"""Statements on ``rule_firing``."""

from __future__ import annotations

from service.db.models import RuleFiring
from service.db.statements import insert_ignoring_conflicts, table_of

# The exactly-once insert: returns the new row's id, or nothing when the key is taken.
INSERT_ONCE = insert_ignoring_conflicts(
    table_of(RuleFiring),
    ("id", "rule_name", "call_id", "occurrence", "status", "due_at", "detail", "created_at", "updated_at"),
    ("rule_name", "call_id", "occurrence"),
    returning="id",
)
