"""The active rule set as the engine sees it: an immutable snapshot indexed by trigger milestone,
and the calls-service hook the engine injects through."""

from __future__ import annotations

from collections.abc import Awaitable, Iterable
from typing import Any, Protocol

from service.calls.service import Journal
from service.db.models import Call, Injection
from service.rules.schema import CompiledRule


class Inject(Protocol):
    """``CallService.inject``: POST a control message and journal it, with our firing in its transaction."""

    def __call__(
        self,
        call_id: str,
        message: dict[str, Any],
        *,
        origin: str,
        attempts: int = 1,
        journal: Journal | None = None,
        call: Call | None = None,
    ) -> Awaitable[Injection]: ...


def triggers(rule: CompiledRule) -> tuple[str, ...]:
    """The milestones that make the engine look at ``rule``."""
    if rule.milestone == "call.elapsed":
        return ("call.answered",)
    if rule.milestone == "user.silent":
        return ("call.answered", "speech.stopped")
    return (rule.milestone,)


class RuleBook:
    """An immutable snapshot of the active rules, indexed by trigger; swapped whole on change."""

    def __init__(self, rules: Iterable[CompiledRule]) -> None:
        self.rules = {rule.name: rule for rule in rules}
        self.by_trigger: dict[str, list[CompiledRule]] = {}
        for rule in self.rules.values():
            for trigger in triggers(rule):
                self.by_trigger.setdefault(trigger, []).append(rule)
