"""Call rows read and written with Core statements inside a write transaction.

The hot write paths (a batch of webhooks, placing a call) change a handful of columns of a handful of
calls per transaction. Through the ORM that is a load into the session's identity map and a unit-of-work
flush, together about a millisecond of Python per call here, several times what SQLite spends on the
statements. :class:`CallRows` reads the rows with one cached ``SELECT`` (``FOR UPDATE`` on PostgreSQL),
hands them out as transient :class:`~service.db.models.Call` objects (so that the functions that apply
Vapi's messages to a call work on them unchanged), numbers the timeline events appended to them, and at
the end writes back only the columns that changed (one cached ``UPDATE``, executed for every call that
changed the same columns), keeping ``call_metadata`` (the metadata filter index) in step as the ORM's
flush hook does for ORM writes, then inserts the events.

The objects are never added to a session: a change made to one after :meth:`CallRows.save` is not
stored, and an ORM write of the same call in the same transaction would not see them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import inspect
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.sql import Executable

from service.calls.events import NewEvent, StoredEvent, insert_events, number_events_of_calls
from service.calls.metadata import index_rows
from service.db.engine import is_postgresql
from service.db.models import Call, utcnow
from service.db.stores import calls as sql
from service.errors import ConflictError

_new_call = inspect(Call).class_manager.new_instance


def only(calls: dict[str, Call], call_id: str) -> Call:
    """The call ``call_id`` of what :meth:`CallRows.lock` answered; :class:`ConflictError` (409) when it
    was left out (an erased call)."""
    call = calls.get(call_id)
    if call is None:
        raise ConflictError(f"call {call_id!r} was erased")
    return call


class CallRows:
    """The calls one write transaction works on, read and written without the ORM's unit of work."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self._connection: AsyncConnection | None = None
        self._postgresql = is_postgresql(session)
        self._loaded: dict[str, tuple[Call, dict[str, Any]]] = {}
        self.created: set[str] = set()  # ids inserted by this transaction (first sightings)
        self.erased: set[str] = set()  # ids asked for that belong to erased calls (never created again)
        self._unindexed: set[str] = set()  # created here, no metadata index rows written yet
        self._events: dict[str, list[NewEvent]] = {}  # appended since the last save, per call

    async def _execute(
        self, statement: Executable, parameters: dict[str, Any] | list[dict[str, Any]] | None = None
    ) -> CursorResult[Any]:
        """Core statements go to the transaction's connection: the session's own execute adds ORM
        bookkeeping (events, bind lookup, autoflush checks) to each one for nothing here."""
        if self._connection is None:
            self._connection = await self._session.connection()
        return await self._connection.execute(statement, parameters)

    async def lock(self, call_ids: Iterable[str], *, origin: str) -> dict[str, Call]:
        """The calls ``call_ids``, locked for this transaction (in id order, so that concurrent writers
        cannot deadlock), each created empty (status ``queued``) if it was not stored; ids created here
        are added to :attr:`created`. ``INSERT … ON CONFLICT DO NOTHING`` makes concurrent first
        sightings (the API's own insert racing the call's first webhook) converge on one row.

        An erased call is never created again: its id is left out of the answer and added to
        :attr:`erased`."""
        call_ids = list(call_ids)
        wanted = sorted(set(call_ids) - set(self._loaded) - self.erased)
        if wanted:
            if self._postgresql and len(wanted) > 1:
                # Insert what is missing before locking anything: holding one call's lock while waiting
                # on another transaction's insert of the next could deadlock. Then lock all in order.
                present = set((await self._execute(sql.IDS_PRESENT, {"call_ids": wanted})).scalars())
                await self._insert_missing([call_id for call_id in wanted if call_id not in present], origin)
                await self._read(wanted)
            else:
                await self._read(wanted)
                missing = [call_id for call_id in wanted if call_id not in self._loaded]
                await self._insert_missing(missing, origin)
                if missing:
                    await self._read(missing)
        return {call_id: self._loaded[call_id][0] for call_id in call_ids if call_id in self._loaded}

    async def lock_one(self, call_id: str, *, origin: str) -> Call:
        """:meth:`lock` for a single call; :class:`ConflictError` (409) for an erased one."""
        return only(await self.lock([call_id], origin=origin), call_id)

    def append(self, call: Call, events: Sequence[NewEvent]) -> None:
        """Add ``events`` to the call's timeline: :meth:`save` numbers them after the call's last ones
        and stores them."""
        if events:
            self._events.setdefault(call.id, []).extend(events)

    async def _insert_missing(self, missing: list[str], origin: str) -> None:
        """Empty rows for ``missing`` (sorted) but the erased ones; a row inserted meanwhile by another
        transaction wins."""
        if missing:  # first sightings only: one indexed look-up per new call
            erased = set((await self._execute(sql.IDS_ERASED, {"call_ids": missing})).scalars())
            self.erased |= erased
            missing = [call_id for call_id in missing if call_id not in erased]
        for call_id in missing:
            now = utcnow()
            result = await self._execute(
                sql.INSERT_NEW,
                {
                    "id": call_id,
                    "status": "queued",
                    "origin": origin,
                    "customer": {},
                    "metadata": {},
                    "listen_auth": False,
                    "control_auth": False,
                    "last_event_seq": 0,
                    "created_at": now,
                    "updated_at": now,
                },
            )
            if result.rowcount:
                self.created.add(call_id)
                self._unindexed.add(call_id)

    async def _read(self, call_ids: list[str]) -> None:
        # One call (most batches): an equality, which spares the IN list's per-execution expansion.
        params: dict[str, str | list[str]]
        if len(call_ids) == 1:
            query, params = sql.BY_ID, {"call_id": call_ids[0]}
        else:
            query, params = sql.BY_IDS, {"call_ids": call_ids}
        if self._postgresql:
            query = sql.LOCK_BY_ID if query is sql.BY_ID else sql.LOCK_BY_IDS
        for row in (await self._execute(query, params)).tuples():
            stored = {attribute: value for (attribute, _), value in zip(sql.FIELDS, row, strict=True)}
            # The object gets its own copies of the JSON columns: changing one in place is still a change.
            fresh = {key: _copy(value) for key, value in stored.items()}
            call = _new_call()  # as the ORM's loader makes one: no constructor, no attribute events
            call.__dict__.update(fresh)
            self._loaded[stored["id"]] = (call, stored)

    async def save(self) -> dict[str, list[StoredEvent]]:
        """Number the events appended since the last save (:func:`~service.calls.events.number_events_of_calls`,
        on the rows this transaction holds), write back the columns each call's object changed (nothing
        for an unchanged call), then insert the events; the numbered events of each call, in order."""
        pending, self._events = self._events, {}
        numbered = await number_events_of_calls(self._session, pending, locked=True)
        for call_id, events in numbered.items():
            call, stored = self._loaded[call_id]
            call.last_event_seq = stored["last_event_seq"] = events[-1].seq  # the numbering wrote it
        now = utcnow()
        reindexed: list[Call] = []
        # Calls that changed the same columns share one executemany.
        updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for call, stored in self._loaded.values():
            current = call.__dict__  # the loaded values and whatever was set since
            changes = {
                column.key: current[attribute]
                for attribute, column in sql.FIELDS
                if current[attribute] != stored[attribute]
            }
            if not changes:
                continue
            changes["updated_at"] = call.updated_at = now
            updates.setdefault(tuple(changes), []).append({"call_id": call.id, **changes})
            stored.update({attribute: _copy(current[attribute]) for attribute, _ in sql.FIELDS})
            if "metadata" in changes:
                reindexed.append(call)
        for parameters in updates.values():
            await self._execute(sql.UPDATE, parameters)
        if stale := [call.id for call in reindexed if call.id not in self._unindexed]:  # a new call has none yet
            await self._execute(sql.DELETE_METADATA, {"call_ids": stale})
        self._unindexed.difference_update(call.id for call in reindexed)
        rows = [row for call in reindexed for row in index_rows(call.id, call.created_at, call.call_metadata)]
        if rows:
            await self._execute(sql.INSERT_METADATA, rows)
        await insert_events(self._session, [event for events in numbered.values() for event in events])
        return numbered


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value
