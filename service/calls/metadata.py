"""How a call's metadata is indexed for ``metadata.<key>=<value>`` filters (the ``call_metadata`` table).

Every top-level scalar of a call's metadata whose key could be filtered on (``METADATA_KEY``) is one row
``(call_id, key, value, kind, created_at)``: strings as they are (``kind`` ``s``), numbers and booleans
in one canonical JSON form (``kind`` ``n``: ``3``, ``3.0`` and ``3e0`` are all ``3``; ``true``). Values
longer than ``MAX_VALUE`` characters are stored as their SHA-256 (``kind`` ``S`` or ``N``) so that
every row fits in a B-tree index. Nulls, lists and objects get no row: nothing matches them.

A filter value ``v`` matches a stored string equal to ``v``, and a stored number or boolean equal to
``v`` read as JSON (``metadata.tier=3`` finds ``"3"``, ``3`` and ``3.0``; ``metadata.vip=true`` finds
``true`` and ``"true"``). ``created_at`` is the call's, so that a filter reads one index range already in
the listing's ``(created_at, id)`` order. One definition for SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from service.db.models import METADATA_VALUE_LENGTH

# The keys a filter can name (``metadata.<key>``); metadata keys outside this get no row.
METADATA_KEY = re.compile(r"[A-Za-z0-9_-]{1,100}")
MAX_VALUE = METADATA_VALUE_LENGTH  # the column's length
STRING, NUMBER = "s", "n"  # kinds; upper case: the value is the SHA-256 of a longer one


def _canonical(value: Any) -> str | None:
    """A number or boolean as one canonical text (equal numbers, equal text); None for anything else."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and math.isfinite(value):
        # As JSON writes it (the shortest text that reads back the same float), then exactly: 1e300 is 10**300.
        exact = Decimal(repr(value))
        return str(int(exact)) if exact == exact.to_integral_value() else repr(value)
    return None


def _stored(text: str, kind: str) -> tuple[str, str]:
    if len(text) <= MAX_VALUE:
        return text, kind
    return hashlib.sha256(text.encode()).hexdigest(), kind.upper()


def encode(value: Any) -> tuple[str, str] | None:
    """``(value, kind)`` as stored for one metadata value; None when it gets no row."""
    if isinstance(value, str):
        return _stored(value, STRING)
    canonical = _canonical(value)
    return None if canonical is None else _stored(canonical, NUMBER)


def candidates(value: str) -> list[tuple[str, str]]:
    """The stored ``(value, kind)`` pairs that the filter value ``value`` matches."""
    found = [_stored(value, STRING)]
    try:
        typed = json.loads(value)
    except (ValueError, RecursionError):
        return found
    canonical = _canonical(typed)
    if canonical is not None:
        found.append(_stored(canonical, NUMBER))
    return found


def index_rows(call_id: str, created_at: dt.datetime | Any, metadata: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """The ``call_metadata`` rows of one call (``created_at`` as the call row holds it)."""
    rows = []
    for key, value in (metadata or {}).items():
        if not METADATA_KEY.fullmatch(key):
            continue
        encoded = encode(value)
        if encoded is not None:
            rows.append(
                {"call_id": call_id, "key": key, "value": encoded[0], "kind": encoded[1], "created_at": created_at}
            )
    return rows
