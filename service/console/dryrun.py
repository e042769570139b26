"""Dry-running a rule against a past call: which occurrences would have fired, and what it would have said.

The same pieces as the engine (``service.rules``): milestones from the call's stored timeline, the
compiled condition and templates, the exactly-once keys. Nothing is written and nothing is sent. The
``call`` a condition sees is the call as stored now (its final status, say), not as it was at the moment.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from service.calls.service import CallService
from service.console.schemas import DryRunOut, DryRunStep
from service.db.models import Call, CallEvent
from service.rules.book import triggers
from service.rules.conditions import ConditionRuntimeError, make_context
from service.rules.milestones import (
    RELEVANT_TYPES,
    EventLike,
    FiringPlan,
    Occurrence,
    call_context,
    firing_plan,
    occurrences_from_events,
)
from service.rules.offloop import COMPILE_TIMEOUT_SECONDS, DRY_RUN_TIMEOUT_SECONDS, off_loop
from service.rules.schema import CompiledRule, RuleSetError, compile_rule
from service.rules.schemas import RuleProblem
from service.rules.templates import TemplateTooLarge

PAGE = 500
MAX_EVENTS = 20_000  # a bound on what one dry run reads (hours of a busy call's milestones)


def _candidate(rule: CompiledRule, occurrence: Occurrence) -> tuple[FiringPlan, dict[str, object]] | None:
    """The engine's plan for this trigger and the event the rule would see; None when it starts none."""
    plan = firing_plan(rule, occurrence)
    if plan is None:
        return None
    if rule.milestone == "call.elapsed":
        assert rule.at is not None
        assert plan.due is not None
        return plan, {"type": "call.elapsed", "seconds": rule.at, "occurredAt": plan.due.isoformat()}
    if rule.milestone == "user.silent":
        assert plan.due is not None
        event: dict[str, object] = {
            "type": "user.silent",
            "silentSeconds": rule.silence,
            "since": occurrence.at.isoformat(),
            "occurredAt": plan.due.isoformat(),
        }
        return plan, event
    return plan, dict(occurrence.event)


def dry_run(rule: CompiledRule, call: Call, events: Sequence[EventLike]) -> list[DryRunStep]:
    """What ``rule`` would have done on ``call``, one step per occurrence of its trigger (pure)."""
    occurrences = occurrences_from_events(call.id, events)
    user_speech = [o.at for o in occurrences if o.milestone == "speech.started" and o.event.get("role") == "user"]
    call_values = call_context(call)
    wanted = triggers(rule)
    fired: set[str] = set()
    ordinals: Counter[tuple[object, str]] = Counter()
    steps: list[DryRunStep] = []
    for occurrence in occurrences:
        if occurrence.milestone == "transcript":  # as firings.occurrence_key: n-th identical utterance
            ordinals[(occurrence.event["source"], occurrence.key)] += 1
        if occurrence.milestone not in wanted or (found := _candidate(rule, occurrence)) is None:
            continue
        plan, event = found
        due = plan.due
        step = DryRunStep(
            seq=int(occurrence.event["seq"]),
            milestone=occurrence.milestone,
            occurred_at=occurrence.at.isoformat(),
            would_fire=False,
            reason="",
            event=event,
            due_at=due.isoformat() if due else None,
        )
        steps.append(step)
        if rule.condition is not None:
            try:
                step.condition = rule.condition.evaluate(make_context(call_values, event))
            except ConditionRuntimeError as exc:
                step.reason = f"the condition failed (taken as false): {exc}"
                continue
            if not step.condition:
                step.reason = "the condition is false"
                continue
        if due is not None and call.ended_at is not None and due > call.ended_at:
            step.reason = "the call had ended before the firing was due"
            continue
        broken = rule.milestone == "user.silent" and any(
            occurrence.at < spoke <= (due or spoke) for spoke in user_speech
        )
        if broken:
            step.reason = "the customer spoke again before the silence was long enough"
            continue
        key = plan.key or f"{occurrence.key}:{ordinals[(occurrence.event['source'], occurrence.key)]}"
        if key in fired:
            step.reason = (
                "once: the rule has already fired on this call"
                if rule.once
                else "the same occurrence already fired (it arrives by webhook and listen socket)"
            )
            continue
        fired.add(key)
        step.would_fire = True
        step.reason = "would fire"
        try:
            message, missing = rule.render(call_values, event)
        except TemplateTooLarge as exc:
            step.reason = f"would fire, but fail: {exc}"
            continue
        step.message, step.missing_fields = message, missing
    return steps


class DryRunService:
    """Reads the call and its milestone events through the calls service, then runs :func:`dry_run`."""

    def __init__(self, calls: CallService) -> None:
        self._calls = calls

    async def run(self, document: dict[str, object], call_id: str) -> DryRunOut:
        compiled = await off_loop(COMPILE_TIMEOUT_SECONDS, compile_rule, document)
        if isinstance(compiled, RuleSetError):
            errors = [RuleProblem(e.rule, e.field, e.reason, e.line) for e in compiled.errors]
            return DryRunOut(valid=False, errors=errors, call_id=call_id, fired=0, steps=[])
        call = await self._calls.get_call(call_id)
        events = await self._milestone_events(call_id)
        steps = await off_loop(DRY_RUN_TIMEOUT_SECONDS, dry_run, compiled, call, events)
        fired = sum(step.would_fire for step in steps)
        return DryRunOut(valid=True, errors=[], call_id=call_id, fired=fired, steps=steps)

    async def _milestone_events(self, call_id: str) -> list[CallEvent]:
        events: list[CallEvent] = []
        cursor: str | None = None
        while len(events) < MAX_EVENTS:
            page, cursor = await self._calls.list_events(
                call_id, after_seq=0, limit=PAGE, types=sorted(RELEVANT_TYPES), source=None, cursor=cursor
            )
            events.extend(page)
            if cursor is None:
                break
        return events
