"""The rules API contract (msgspec Structs, camelCase on the wire). Separate from the ORM models."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any, Literal

import msgspec


class RuleOut(msgspec.Struct, rename="camel"):
    """A rule as stored (``document``) and as the engine runs it (``compiled``)."""

    name: str
    source: Literal["file", "api"]
    document: dict[str, Any]
    compiled: dict[str, Any]
    created_at: dt.datetime | None
    updated_at: dt.datetime | None


class RulePage(msgspec.Struct, rename="camel"):
    data: list[RuleOut]
    next_cursor: str | None


class RuleProblem(msgspec.Struct, rename="camel", omit_defaults=True):
    rule: str
    field: str
    reason: str
    line: int | None = None


class ValidationOut(msgspec.Struct, rename="camel"):
    """``POST /v1/rules/validate``: the compiled form of every valid rule, and every error."""

    valid: bool
    rules: list[dict[str, Any]]
    errors: list[RuleProblem]


class FiringOut(msgspec.Struct, rename="camel"):
    id: uuid.UUID
    rule: str
    occurrence: str
    milestone: str | None
    status: str
    due_at: dt.datetime
    fired_at: dt.datetime | None
    injection_id: uuid.UUID | None
    error: str | None
    created_at: dt.datetime


class FiringPage(msgspec.Struct, rename="camel"):
    data: list[FiringOut]
    next_cursor: str | None
