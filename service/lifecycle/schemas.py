"""The lifecycle API contract: legal hold."""

from __future__ import annotations

from typing import Annotated

import msgspec


class LegalHoldIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Put a call on legal hold (never erased, by request or retention) or lift the hold."""

    hold: bool
    reason: Annotated[str, msgspec.Meta(max_length=1000, examples=["dispute #4711"])] | None = None


class LegalHoldOut(msgspec.Struct, rename="camel"):
    call_id: str
    hold: bool
    reason: str | None
