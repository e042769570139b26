"""The rule engine: turns committed timeline events into firings, exactly once, on time.

The engine subscribes to call changes (:mod:`service.calls.changes`), two ways in. Changes that carry
their call (webhooks: the hot path) are planned inside the transaction that stores their events
(:meth:`RuleEngine.plan`): conditions are evaluated there (CEL, one prepared context per occurrence
shared by every rule) and the firing rows are inserted with the events, so a stored milestone never
loses its firing and an immediate rule needs no transaction of its own before its control POST; after
the commit, :meth:`RuleEngine.dispatch` hands the firings to the engine's worker. Listen-socket text
frames are committed without their call and reach :meth:`RuleEngine.observe` after their commit
(synchronous, no I/O); the worker evaluates those and records each firing in its own transaction.
A firing posts through the control channel, then records the injection and closes the firing in one
transaction of its own. A ``notify`` firing sends nothing itself: one transaction queues its
``rule.notified`` outbound webhook in the outbox and closes the firing, so it needs no live call (the
one action of ``call.analyzed``) and one interrupted is simply delivered again. Firing tasks are
bounded and owned by the engine.

Timed firings (``delay``, ``call.elapsed``, ``user.silent``) wait as rows in ``rule_firing``; a timer
task claims the due ones (``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so they survive restarts and fire
on exactly one replica. The timer sleeps until the earliest due time this replica scheduled (so a
firing is claimed when due, not at the next poll) and polls in between for the other replicas' rows.
Rule changes made through the API (on any replica) are picked up by polling a cheap fingerprint of
the ``rule`` table.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import math
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.calls import status as call_status
from service.calls.announce import call_summary
from service.calls.changes import AfterCommit, CallChange
from service.calls.control import ControlChannel, Posted, record_injection
from service.calls.events import NewEvent, append_events
from service.calls.speech import catch_up
from service.db.engine import Database
from service.db.models import Call, Rule, RuleFiring, utcnow
from service.errors import ConflictError
from service.metrics import Metrics
from service.rules import firings
from service.rules.book import RuleBook
from service.rules.conditions import ConditionRuntimeError, make_context
from service.rules.milestones import (
    EventLike,
    FiringPlan,
    Occurrence,
    call_context,
    decide_due,
    firing_plan,
    occurrences_from_events,
)
from service.rules.schema import CompiledRule, Notify, RuleSetError, action_type, compile_rule
from service.tasks import TaskOwner

log = structlog.get_logger(__name__)

QUEUE_LIMIT = 10_000
CLAIM_BATCH = 100
FIRING_CONCURRENCY = 64  # control POSTs in flight at most
JOURNAL_BATCH = 200  # posted firings closed per transaction at most
RELOAD_EVERY_SECONDS = 1.0
SWEEP_EVERY_SECONDS = 30.0
TIMER_SLACK_SECONDS = 0.002  # the loop's clock and the wall clock may differ by a hair


@dataclass(frozen=True, slots=True)
class _Batch:
    """Committed milestones of one call, observed after their commit (see :meth:`RuleEngine.observe`)."""

    call_id: str
    occurrences: list[Occurrence]
    observed: float  # time.perf_counter() when handed over


@dataclass(frozen=True, slots=True)
class _Decision:
    """One rule acting on one occurrence (its condition held): fire now or record a timed firing."""

    rule: CompiledRule
    occurrence: Occurrence
    plan: FiringPlan


@dataclass(frozen=True, slots=True)
class _Recorded:
    """A decision's firing row as inserted: ``firing_id`` is None when its key already had one."""

    decision: _Decision
    firing_id: uuid.UUID | None
    key: str

    @property
    def immediate(self) -> bool:
        """To be delivered now (after the commit), not by the timer nor never."""
        return self.firing_id is not None and self.decision.plan.due is None


@dataclass(frozen=True, slots=True)
class _Posted:
    """A firing whose control POST has been made: what :meth:`RuleEngine._journal` records of it."""

    firing_id: uuid.UUID
    rule: CompiledRule
    key: str
    posted: Posted
    base: dict[str, Any]


@dataclass(slots=True)
class Planned:
    """The firings :meth:`RuleEngine.plan` recorded in the caller's transaction; hand it to
    :meth:`RuleEngine.dispatch` after the commit."""

    call: Call
    call_values: dict[str, Any]
    observed: float
    recorded: list[_Recorded] = field(default_factory=list)


class RuleEngine:
    """Owner of the rule worker, the timer and every firing task (see module docstring)."""

    def __init__(
        self,
        db: Database,
        control: ControlChannel,
        metrics: Metrics,
        *,
        file_rules: Sequence[CompiledRule] = (),
        poll_interval: float = 0.25,
        concurrency: int = FIRING_CONCURRENCY,
        inject_attempts: int = 3,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._db = db
        self._control = control
        self._metrics = metrics
        self._file_rules = tuple(file_rules)
        self._api_rules: dict[str, CompiledRule] = {}
        self._book = RuleBook(self._file_rules)
        self._fingerprint: tuple[tuple[str, dt.datetime], ...] | None = None  # each stored rule's stamp
        self._poll_interval = poll_interval
        self._inject_attempts = inject_attempts
        self._clock = clock
        self._queue: asyncio.Queue[_Batch | Planned] = asyncio.Queue(maxsize=QUEUE_LIMIT)
        self._posted: asyncio.Queue[_Posted] = asyncio.Queue()  # bounded by the firing tasks that fill it
        self._loops = TaskOwner("rules")  # the worker and the timer
        self._journaller = TaskOwner("rules-journal")  # closes posted firings, many per transaction
        self._firings = TaskOwner("rule", limit=concurrency)  # one task per firing being delivered
        self._wake = asyncio.Event()
        self._timer_pass = asyncio.Lock()  # held while the timer claims and starts due firings
        self._dues: list[dt.datetime] = []  # heap: due times this replica scheduled, not yet passed
        self._closing = False

    # -- rule set ------------------------------------------------------------------------------------

    @property
    def file_rules(self) -> tuple[CompiledRule, ...]:
        return self._file_rules

    @property
    def book(self) -> RuleBook:
        return self._book

    async def refresh(self) -> None:
        """Reload the rules stored through the API if the table changed (cheap when it did not)."""
        async with self._db.read() as session:
            # Every rule's stamp, not the newest one: replicas' clocks differ, and an update stamped
            # before the newest would otherwise go unseen everywhere (the rules table is small).
            stamps = tuple((await session.execute(select(Rule.name, Rule.updated_at).order_by(Rule.name))).tuples())
            if stamps == self._fingerprint:
                return
            rows = list((await session.scalars(select(Rule))).all())
        api_rules: dict[str, CompiledRule] = {}
        file_names = {rule.name for rule in self._file_rules}
        for row in rows:
            compiled = compile_rule(row.document)
            if isinstance(compiled, RuleSetError):
                log.error("stored rule no longer compiles; it is inactive", rule=row.name, errors=str(compiled))
            elif compiled.name in file_names:
                log.error("stored rule shadows a rule of the rules file; the file wins", rule=row.name)
            else:
                api_rules[compiled.name] = compiled
        self._api_rules = api_rules
        self._book = RuleBook([*self._file_rules, *api_rules.values()])
        self._fingerprint = stamps
        log.info("rules loaded", file=len(self._file_rules), api=len(api_rules))

    # -- lifecycle -----------------------------------------------------------------------------------

    async def start(self) -> None:
        await self.refresh()
        self._loops.spawn(self._work(), name="worker")
        self._loops.spawn(self._tick(), name="timer")

    async def close(self, timeout: float) -> None:
        """Refuse new work; within ``timeout``, start what was handed over before (the firings committed
        with their milestones, the queued milestones, the due firings the timer claimed) and let the
        firing tasks finish; cancel the rest, then journal what was posted."""
        self._closing = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._queue.join()  # the worker has started every queued item's firings
                await self._timer_pass.acquire()  # the timer's pass has started every firing it claimed
        await self._loops.close()
        if cancelled := await self._firings.close(max(0.0, deadline - loop.time())):
            log.warning("rule firings cancelled at shutdown", count=cancelled)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._posted.join()
        await self._journaller.close()

    async def _spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``work`` as an owned task; waits for a free slot (backpressure on the worker and timer)."""
        await self._firings.spawn_when_free(work, name=name)

    # -- observing -----------------------------------------------------------------------------------

    def _occurrences(self, call_id: str, events: Iterable[EventLike]) -> list[Occurrence]:
        if self._closing or not self._book.by_trigger:
            return []
        wanted = self._book.by_trigger
        return [o for o in occurrences_from_events(call_id, events) if o.milestone in wanted]

    async def stage(self, session: AsyncSession, change: CallChange) -> AfterCommit | None:
        """Call changes (subscribed): plan the firings of a change that carries its call in its
        transaction, dispatch them after the commit; observe the others after their commit."""
        if self._closing or not self._book.by_trigger or not change.events:
            return None
        if change.call is None:
            return partial(self.observe, change.call_id, change.events)
        planned = await self.plan(session, change.call, change.events)
        return partial(self.dispatch, planned) if planned is not None else None

    async def plan(self, session: AsyncSession, call: Call, events: Iterable[EventLike]) -> Planned | None:
        """Record the firings of ``events`` in the caller's write transaction, which also stores them.

        The webhook path uses this: a milestone and its firings commit together (a crash cannot lose
        the firing of a stored milestone), and an immediate rule costs no transaction of its own before
        its control POST. Pass the result to :meth:`dispatch` after the commit; drop it on rollback.
        """
        occurrences = self._occurrences(call.id, events)
        if not occurrences:
            return None
        planned = Planned(call, call_context(call), time.perf_counter())
        for occurrence in occurrences:
            for decision in self._decide(planned.call_values, occurrence):
                planned.recorded.append(await self._record(session, decision))
        return planned

    def dispatch(self, planned: Planned) -> None:
        """After the commit of :meth:`plan`'s transaction: deliver its immediate firings. Never blocks."""
        immediate = sum(self._committed(recorded) for recorded in planned.recorded)
        if immediate:
            self._enqueue(planned, planned.call.id, immediate)

    def observe(self, call_id: str, events: Iterable[EventLike]) -> None:
        """Committed events of one call: queue their milestones for the worker. Never blocks, no I/O.

        For events committed without :meth:`plan` (listen-socket text frames): the worker reads the
        call, and each firing gets a transaction of its own.
        """
        occurrences = self._occurrences(call_id, events)
        if occurrences:
            self._enqueue(_Batch(call_id, occurrences, time.perf_counter()), call_id, len(occurrences))

    def _enqueue(self, item: _Batch | Planned, call_id: str, count: int) -> None:
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            # A planned firing left in "firing" is closed as failed by the sweep: it never speaks twice.
            self._metrics.rule_events_dropped.inc(count)
            log.warning("rule queue full: milestones dropped", call_id=call_id, count=count)

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            call_id = item.call.id if isinstance(item, Planned) else item.call_id
            try:
                if isinstance(item, Planned):
                    for recorded in filter(lambda r: r.immediate, item.recorded):
                        work = self._deliver_recorded(recorded, item.call, item.call_values, item.observed)
                        await self._spawn(work, f"rule:{recorded.decision.rule.name}")
                else:
                    await self._process(item)
            except Exception:  # the database may be briefly away; the next batch may work
                log.exception("rule evaluation failed", call_id=call_id)
            finally:
                self._queue.task_done()

    async def _process(self, batch: _Batch) -> None:
        """Read the call, evaluate the batch, then record and deliver each firing in an owned task.
        Nothing here waits on more than one short read."""
        async with self._db.read() as session:
            call = await session.get(Call, batch.call_id)
        if call is None:
            return
        call_values = call_context(call)
        decisions = [d for occurrence in batch.occurrences for d in self._decide(call_values, occurrence)]
        for decision in decisions:
            work = self._record_and_fire(decision, call, call_values, batch.observed)
            await self._spawn(work, f"rule:{decision.rule.name}")

    def _decide(self, call_values: dict[str, Any], occurrence: Occurrence) -> list[_Decision]:
        """Which rules act on ``occurrence`` and how (conditions of immediate rules evaluated here)."""
        decisions: list[_Decision] = []
        context = None
        for rule in self._book.by_trigger.get(occurrence.milestone, []):
            plan = firing_plan(rule, occurrence)
            if plan is None:
                continue
            timed = rule.milestone in ("call.elapsed", "user.silent")  # their conditions: when due
            if not timed and rule.condition is not None:
                context = context or make_context(call_values, occurrence.event)
                if not self._condition_holds(rule, context, occurrence.call_id):
                    continue
            decisions.append(_Decision(rule, occurrence, plan))
        return decisions

    def _condition_holds(self, rule: CompiledRule, context: Any, call_id: str) -> bool:
        assert rule.condition is not None
        try:
            return rule.condition.evaluate(context)
        except ConditionRuntimeError as exc:
            self._metrics.rule_condition_errors.labels(rule=rule.name).inc()
            log.warning("rule condition failed; taken as false", rule=rule.name, call_id=call_id, error=str(exc))
            return False

    def _expect(self, due: dt.datetime) -> None:
        """A firing is due at ``due``: the timer claims it then rather than at its next poll."""
        if not self._dues or due < self._dues[0]:
            self._wake.set()  # the timer's current sleep may end too late
        heapq.heappush(self._dues, due)

    def _until_next_due(self) -> float:
        """Seconds until the earliest firing this replica scheduled is due (inf when none is)."""
        if not self._dues:
            return math.inf
        return (self._dues[0] - self._clock()).total_seconds() + TIMER_SLACK_SECONDS

    # -- recording and firing ------------------------------------------------------------------------

    async def _record(self, session: AsyncSession, decision: _Decision) -> _Recorded:
        """Insert the decision's firing row: ``scheduled`` (timed) or ``firing`` (delivered next)."""
        occurrence, plan = decision.occurrence, decision.plan
        # A transcript's key (None in the plan) gets its ordinal here, in the firing's transaction.
        key = plan.key or await firings.occurrence_key(session, occurrence)
        firing_id = await firings.insert_firing(
            session,
            rule=decision.rule.name,
            call_id=occurrence.call_id,
            occurrence=key,
            status="firing" if plan.due is None else "scheduled",
            due_at=plan.due or self._clock(),
            detail={
                "milestone": decision.rule.milestone,
                "action": action_type(decision.rule.action),
                "occurrence": occurrence.key,
                "event": occurrence.event,
                **plan.extra,
            },
        )
        return _Recorded(decision, firing_id, key)

    def _committed(self, recorded: _Recorded) -> bool:
        """A recorded firing's row is committed: count it, wake the timer for a timed one due soon;
        whether it is to be delivered now."""
        rule, due = recorded.decision.rule, recorded.decision.plan.due
        if recorded.firing_id is None:
            self._metrics.rule_firings.labels(rule=rule.name, status="duplicate").inc()
        elif due is not None:
            self._metrics.rule_firings.labels(rule=rule.name, status="scheduled").inc()
            self._expect(due)
        return recorded.immediate

    async def _record_and_fire(
        self, decision: _Decision, call: Call, call_values: dict[str, Any], observed: float
    ) -> None:
        """The observe path: record the firing in a transaction of its own, then deliver it if immediate."""
        async with self._db.write() as session:
            recorded = await self._record(session, decision)
        if self._committed(recorded):
            await self._deliver_recorded(recorded, call, call_values, observed)

    async def _deliver_recorded(
        self, recorded: _Recorded, call: Call, call_values: dict[str, Any], observed: float
    ) -> None:
        assert recorded.firing_id is not None
        decision = recorded.decision
        event = decision.occurrence.event
        await self._deliver(recorded.firing_id, decision.rule, call, recorded.key, call_values, event, observed)

    async def _deliver(
        self,
        firing_id: uuid.UUID,
        rule: CompiledRule,
        call: Call,
        key: str,
        call_values: dict[str, Any],
        event: dict[str, Any],
        observed: float | None,
        due_at: dt.datetime | None = None,
    ) -> None:
        """Render, then POST a control message (through the control channel): the firing is closed with
        its outcome and the injection by the journal task (:meth:`_journal_posted`), many firings per
        transaction, so that a firing task holds its slot for the POST only, not for a turn at the
        database's write lock. A ``notify`` is closed at once (:meth:`_notify`)."""
        call_id = call.id
        base = {"rule": rule.name, "firingId": str(firing_id), "occurrence": key, "milestone": rule.milestone}
        try:  # rendering inside: a template refusing to grow too large fails the firing, not the worker
            message, missing = rule.render(call_values, event)
            if missing:
                log.warning("template fields missing; rendered empty", rule=rule.name, call_id=call_id, fields=missing)
            posted: Posted | None = None
            if isinstance(rule.action, Notify):
                if not await self._notify(firing_id, call, message, event, base):
                    return  # closed by another delivery of the same firing
            else:
                posted = await self._control.post(call, message, attempts=self._inject_attempts)
        except ConflictError as exc:  # the call is not live (any more): nothing was sent
            await self._skip(firing_id, rule, call_id, exc.detail, base)
            return
        except Exception as exc:
            await self._failed(firing_id, rule, call_id, exc, base)
            return
        if observed is not None:
            self._metrics.rule_fire_seconds.observe(time.perf_counter() - observed)
        if due_at is not None:
            self._metrics.rule_lateness_seconds.observe(max(0.0, (self._clock() - due_at).total_seconds()))
        if posted is None:  # notified, and closed already
            self._counted(rule, call_id, key, fired=True)
            return
        self._posted.put_nowait(_Posted(firing_id, rule, key, posted, base))
        if not len(self._journaller) and not self._journaller.closed:  # started with the first firing
            self._journaller.spawn(self._journal_posted(), name="journal")

    async def _failed(
        self, firing_id: uuid.UUID, rule: CompiledRule, call_id: str, exc: Exception, base: dict[str, Any]
    ) -> None:
        self._metrics.rule_failures.labels(reason="error").inc()
        log.error("rule firing failed", rule=rule.name, call_id=call_id, exc_info=exc)
        event = NewEvent("switchboard", "rule.failed", {**base, "error": type(exc).__name__})
        await firings.finish_firing(
            self._db, firing_id, call_id, status="failed", error=type(exc).__name__, event=event
        )

    # -- journal -------------------------------------------------------------------------------------

    async def _journal_posted(self) -> None:
        """Close posted firings, every one waiting (up to :data:`JOURNAL_BATCH`) in one transaction: the
        injection, the firing's outcome and their events. If a batch fails, its firings are retried
        one by one, so that a bad one fails alone (closed as failed, or by the sweep if even that fails)."""
        while True:
            batch = [await self._posted.get()]
            while len(batch) < JOURNAL_BATCH and not self._posted.empty():
                batch.append(self._posted.get_nowait())
            try:
                await self._journal(batch)
            except Exception:
                for item in batch:
                    try:
                        await self._journal([item])
                    except Exception as exc:
                        with contextlib.suppress(Exception):  # else the sweep closes it as failed
                            await self._failed(item.firing_id, item.rule, item.posted.call_id, exc, item.base)
            finally:
                for _ in batch:
                    self._posted.task_done()

    async def _journal(self, batch: list[_Posted]) -> None:
        # In call order (then posting order): PostgreSQL row locks taken in the order every writer uses.
        ordered = sorted(batch, key=lambda item: item.posted.call_id)
        outcomes: list[tuple[_Posted, bool]] = []
        async with self._db.write() as session:
            for item in ordered:
                posted = item.posted
                injection, sent = await record_injection(session, posted, origin="rule")
                fired = injection.status == "sent"
                await firings.close_firing(
                    session,
                    item.firing_id,
                    status="fired" if fired else "failed",
                    injection_id=injection.id,
                    error=injection.error,
                )
                payload = {
                    **item.base,
                    "injectionId": str(injection.id),
                    "type": posted.message["type"],
                    "error": injection.error,
                }
                outcome = NewEvent("switchboard", "rule.fired" if fired else "rule.failed", payload)
                spoken = await catch_up(session, injection, since=posted.started_at)  # spoken before recorded
                events = [sent, outcome] if spoken is None else [sent, outcome, spoken]
                await append_events(session, posted.call_id, events)
                outcomes.append((item, fired))
        for item, fired in outcomes:
            self._counted(item.rule, item.posted.call_id, item.key, fired=fired)

    def _counted(self, rule: CompiledRule, call_id: str, key: str, *, fired: bool) -> None:
        """The metrics and log line of a firing closed as fired or failed."""
        if not fired:
            self._metrics.rule_failures.labels(reason="injection-failed").inc()
        self._metrics.rule_firings.labels(rule=rule.name, status="fired" if fired else "failed").inc()
        log.info("rule fired" if fired else "rule firing failed", rule=rule.name, call_id=call_id, occurrence=key)

    async def _notify(
        self, firing_id: uuid.UUID, call: Call, message: dict[str, Any], event: dict[str, Any], base: dict[str, Any]
    ) -> bool:
        """Queue ``rule.notified`` for the subscribed endpoints, close the firing and journal it, in one
        transaction; False when the firing was already closed (nothing queued twice)."""
        notification = {
            "callId": call.id,
            **{name: base[name] for name in ("rule", "firingId", "occurrence", "milestone")},
            "message": message.get("message"),
            "event": event,
            "call": call_summary(call),
        }
        async with self._db.write() as session:
            if not await firings.close_notified(session, firing_id, notification):
                return False
            await append_events(session, call.id, [NewEvent("switchboard", "rule.fired", {**base, "type": "notify"})])
        return True

    async def _skip(
        self, firing_id: uuid.UUID, rule: CompiledRule, call_id: str, reason: str, base: dict[str, Any]
    ) -> None:
        self._metrics.rule_firings.labels(rule=rule.name, status="skipped").inc()
        event = NewEvent("switchboard", "rule.skipped", {**base, "reason": reason})
        await firings.finish_firing(self._db, firing_id, call_id, status="skipped", error=reason, event=event)

    # -- timers --------------------------------------------------------------------------------------

    async def _tick(self) -> None:
        last_reload = last_sweep = time.monotonic()
        loop = asyncio.get_running_loop()
        while True:
            poll_at = loop.time() + self._poll_interval
            while (wait := min(poll_at - loop.time(), self._until_next_due())) > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._wake.wait()  # set when a firing is due sooner than this sleep's end
                self._wake.clear()
            passed = self._clock()
            while self._dues and self._dues[0] <= passed:
                heapq.heappop(self._dues)
            try:
                async with self._timer_pass:  # close() lets a pass start what it claimed
                    await self.fire_due_timers()
                    now = time.monotonic()
                    if now - last_reload >= RELOAD_EVERY_SECONDS:
                        last_reload = now
                        await self.refresh()
                    if now - last_sweep >= SWEEP_EVERY_SECONDS:
                        last_sweep = now
                        await self.sweep_stuck()
            except Exception as exc:  # the database may be briefly away; timers wait in their rows
                log.warning("rule timer pass failed", error=type(exc).__name__)

    async def fire_due_timers(self) -> int:
        """Claim every due firing (this replica only gets rows no other replica holds) and fire them."""
        total = 0
        while not self._closing:
            rows = await firings.claim_due(self._db, now=self._clock(), limit=CLAIM_BATCH)
            for row in rows:
                await self._spawn(self._fire_claimed(row), f"rule-timer:{row.rule_name}")
            total += len(rows)
            if len(rows) < CLAIM_BATCH:
                break
        return total

    async def sweep_stuck(self) -> None:
        """Firings interrupted mid-delivery (a crash): control messages are closed as failed (whether the
        POST left is unknown), notifications are delivered again (they surely did not leave)."""
        stuck, again = await firings.fail_stuck(self._db, now=self._clock())
        if stuck:
            log.warning("interrupted rule firings closed as failed", count=stuck)
        for row in again:
            log.info("interrupted rule notification delivered again", rule=row.rule_name, call_id=row.call_id)
            await self._spawn(self._fire_claimed(row), f"rule-timer:{row.rule_name}")

    async def _fire_claimed(self, row: RuleFiring) -> None:
        rule = self._book.rules.get(row.rule_name)
        base = {"rule": row.rule_name, "firingId": str(row.id), "occurrence": row.occurrence}
        if rule is None:
            removed = NewEvent("switchboard", "rule.skipped", {**base, "reason": "the rule was removed"})
            await firings.finish_firing(
                self._db, row.id, row.call_id, status="skipped", error="the rule was removed", event=removed
            )
            return
        async with self._db.read() as session:
            call = await session.get(Call, row.call_id)
            speech = await firings.user_speech(session, row.call_id) if rule.milestone == "user.silent" else []
        # A notification needs no live call, unless its milestone is one of a live call (a time, a silence).
        live_only = not isinstance(rule.action, Notify) or rule.milestone in ("call.elapsed", "user.silent")
        if call is None or (live_only and not call_status.is_live(call.status)):
            await self._skip(row.id, rule, row.call_id, "the call ended before the firing was due", base)
            return
        decision = decide_due(
            milestone=rule.milestone,
            detail=dict(row.detail or {}),
            now=self._clock(),
            at=rule.at,
            silence=rule.silence,
            once=rule.once,
            speech=speech,
        )
        if decision.action == "skip":
            await self._skip(row.id, rule, row.call_id, decision.reason or "skipped", base)
            return
        if decision.action == "wait" and decision.due is not None:
            await firings.reschedule(self._db, row.id, due_at=decision.due, detail=decision.detail or {})
            self._expect(decision.due)
            return
        event = decision.event or {}
        call_values = call_context(call)
        evaluate_now = rule.milestone in ("call.elapsed", "user.silent") and rule.condition is not None
        if evaluate_now and not self._condition_holds(rule, make_context(call_values, event), row.call_id):
            await self._skip(row.id, rule, row.call_id, "the condition was false when due", base)
            return
        await self._deliver(row.id, rule, call, row.occurrence, call_values, event, None, due_at=row.due_at)
