"""The active rule set as the engine sees it: an immutable snapshot indexed by trigger milestone."""

from __future__ import annotations

from collections.abc import Iterable

from service.rules.schema import CompiledRule


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
