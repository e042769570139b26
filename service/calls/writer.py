"""The one writer of calls: a unit of work that locks calls, applies changes, appends their events,
saves, and hands the changes to the subscribers (:mod:`service.calls.changes`).

Every path that applies what Vapi says about a call — a batch of server messages, placing a call,
importing one, reconciling one with ``GET /call/{id}`` — goes through :meth:`CallWriter.transaction`::

    async with writer.transaction() as unit:
        call = await unit.lock_one(call_id, origin="api")
        before = unit.status_before(call)          # None for a call this transaction created
        merge_vapi_call(call, vapi_call)           # pure: service.calls.tracking
        unit.record(call, events, origin="api", previous_status=before)

On leaving the block the calls and events are saved (:class:`~service.calls.rows.CallRows`: the events
numbered after each call's last ones), the subscribers stage their writes (outbox rows, firings, leases)
in the same transaction, it commits, and their after-commit callbacks run. An exception rolls
everything back and notifies nobody.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession

from service.calls.changes import AfterCommit, CallChange, CallChanges, Origin
from service.calls.events import NewEvent
from service.calls.rows import CallRows, only
from service.calls.speech import follow_speech
from service.db.engine import Database
from service.db.models import Call


class CallUnit:
    """The calls of one write transaction (see the module docstring)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._rows = CallRows(session)
        self._unseen: set[str] = set()  # created here and not recorded yet: their first change is a sighting
        self._recorded: list[tuple[Call, list[NewEvent], Origin, str | None]] = []  # (call, events, origin, before)
        self.changes: list[CallChange] = []  # once saved: what was recorded, with the events numbered

    async def lock(self, call_ids: Iterable[str], *, origin: Origin) -> dict[str, Call]:
        """The calls, locked for this transaction and created empty when not stored yet; an erased
        call's id is left out (it is never stored again)."""
        known = set(self._rows.created)
        calls = await self._rows.lock(call_ids, origin=origin)
        self._unseen |= self._rows.created - known
        return calls

    async def lock_one(self, call_id: str, *, origin: Origin) -> Call:
        """One call, as :meth:`lock`; :class:`~service.errors.ConflictError` (409) for an erased one."""
        return only(await self.lock([call_id], origin=origin), call_id)

    def created(self, call: Call) -> bool:
        """Whether this transaction stored the call for the first time."""
        return call.id in self._rows.created

    def status_before(self, call: Call) -> str | None:
        """The call's status now, as the ``previous_status`` of the change about to be applied; None
        while the call's first sighting (a call this transaction created) is not recorded yet."""
        return None if call.id in self._unseen else call.status

    def record(self, call: Call, events: Sequence[NewEvent], *, origin: Origin, previous_status: str | None) -> int:
        """Note a change of ``call`` and the events it adds to its timeline (numbered and stored when
        the unit is saved); the change's position in :attr:`changes` once saved."""
        self._unseen.discard(call.id)
        self._recorded.append((call, list(events), origin, previous_status))
        return len(self.changes) + len(self._recorded) - 1

    async def save(self) -> None:
        """Store the calls and their events; :attr:`changes` then holds every recorded change.

        Speech messages among the events move the call's say injections (``calls.speech``): the events
        that records join the change."""
        for index, (call, events, origin, previous_status) in enumerate(self._recorded):
            events.extend(await follow_speech(self.session, call.id, events))
            self._rows.append(call, events)
            self._recorded[index] = (call, events, origin, previous_status)
        numbered = await self._rows.save()
        taken: dict[str, int] = {}
        for call, recorded, origin, previous_status in self._recorded:
            count = len(recorded)
            first = taken.get(call.id, 0)
            taken[call.id] = first + count
            stored = numbered.get(call.id, [])[first : first + count]
            self.changes.append(CallChange(call.id, origin, stored, call, previous_status))
        self._recorded = []


class CallWriter:
    """Opens :class:`CallUnit` transactions and publishes what they committed."""

    def __init__(self, db: Database, changes: CallChanges) -> None:
        self._db = db
        self._changes = changes

    @asynccontextmanager
    async def transaction(self, *, urgent: bool = False) -> AsyncIterator[CallUnit]:
        """``urgent``: before the ordinary writers waiting (``Database.write``); what rules answer."""
        after: list[AfterCommit]
        async with self._db.write(urgent=urgent) as session:
            unit = CallUnit(session)
            yield unit
            await unit.save()
            after = await self._changes.stage(session, unit.changes)
        self._changes.committed(after)
