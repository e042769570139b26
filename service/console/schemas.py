"""The console's API contract (msgspec Structs, camelCase on the wire). Separate from the ORM models."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from service.calls.schemas import VapiId
from service.rules.schemas import RuleProblem


class DryRunIn(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """A rule document (as for ``PUT /v1/rules/{name}``) and the past call to replay it against."""

    rule: dict[str, Any]
    call_id: VapiId


class DryRunStep(msgspec.Struct, rename="camel", omit_defaults=True):
    """One occurrence of the rule's milestone on the call, and what the rule would have done with it."""

    seq: int
    """The timeline event the occurrence comes from."""
    milestone: str
    occurred_at: str | None
    would_fire: bool
    reason: str
    """Why it would fire, or why not (condition false, already fired once, the call had ended …)."""
    event: dict[str, Any]
    """What the condition and the templates see as ``event``."""
    condition: bool | None = None
    """The condition's value (None: the rule has none, or it failed, see ``reason``)."""
    message: dict[str, Any] | None = None
    """The control message the rule would have sent (templates rendered)."""
    missing_fields: list[str] = msgspec.field(default_factory=list)
    due_at: str | None = None
    """For timed rules (``delay``, ``call.elapsed``, ``user.silent``): when the firing would have been due."""


class DryRunOut(msgspec.Struct, rename="camel"):
    """``POST /v1/rules/dry-run``: every occurrence on the call, or every error of the rule."""

    valid: bool
    errors: list[RuleProblem]
    call_id: str
    fired: Annotated[int, msgspec.Meta(ge=0)]
    steps: list[DryRunStep]
