"""The rules API: stored rules (CRUD), validation, and a call's firings. One method, one unit of work.

Rules from ``SWITCHBOARD_RULES_FILE`` are read-only here; stored rules live in the ``rule`` table and
reach the engine of this replica at once (``refresh`` after commit) and of other replicas within a
second (the engine polls a fingerprint of the table).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from service.db.engine import Database
from service.db.models import Call, Rule, RuleFiring, utcnow
from service.errors import ConflictError, InvalidInputError, NotFoundError
from service.pagination import BAD_CURSOR, decode_cursor, encode_cursor, keyset_page
from service.rules import firings
from service.rules.engine import RuleEngine
from service.rules.offloop import COMPILE_TIMEOUT_SECONDS, off_loop
from service.rules.schema import CompiledRule, RuleError, RuleSetError, compile_rule, compile_rules


@dataclass(frozen=True, slots=True)
class RuleView:
    rule: CompiledRule
    source: str
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


def _invalid(errors: list[RuleError]) -> InvalidInputError:
    detail = "; ".join(str(error) for error in errors)
    return InvalidInputError(f"invalid rule: {detail}", errors=[error.to_json() for error in errors])


class RuleService:
    def __init__(self, db: Database, engine: RuleEngine) -> None:
        self._db = db
        self._engine = engine

    def _file_rule(self, name: str) -> CompiledRule | None:
        return next((rule for rule in self._engine.file_rules if rule.name == name), None)

    async def list_rules(self, *, limit: int, cursor: str | None) -> tuple[list[RuleView], str | None]:
        """File and stored rules, by name."""
        after = ""
        if cursor:
            parts = decode_cursor(cursor)
            if not parts or not isinstance(parts[0], str):
                raise InvalidInputError(BAD_CURSOR)
            after = parts[0]
        async with self._db.read() as session:
            rows = list((await session.scalars(select(Rule).where(Rule.name > after).order_by(Rule.name))).all())
        views = [RuleView(rule, "file") for rule in self._engine.file_rules if rule.name > after]
        for row in rows:
            compiled = compile_rule(row.document)
            if isinstance(compiled, CompiledRule) and self._file_rule(row.name) is None:
                views.append(RuleView(compiled, "api", row.created_at, row.updated_at))
        views.sort(key=lambda view: view.rule.name)
        return keyset_page(views, limit, lambda view: encode_cursor(view.rule.name))

    async def get_rule(self, name: str) -> RuleView:
        if (rule := self._file_rule(name)) is not None:
            return RuleView(rule, "file")
        async with self._db.read() as session:
            row = await session.get(Rule, name)
        if row is None:
            raise NotFoundError(f"no rule named {name!r}")
        compiled = compile_rule(row.document)
        if isinstance(compiled, RuleSetError):
            raise _invalid(compiled.errors)
        return RuleView(compiled, "api", row.created_at, row.updated_at)

    def _compile(self, document: Mapping[str, Any]) -> CompiledRule:
        compiled = compile_rule(document)
        if isinstance(compiled, RuleSetError):
            raise _invalid(compiled.errors)
        if self._file_rule(compiled.name) is not None:
            raise ConflictError(f"rule {compiled.name!r} is defined in the rules file, which is read-only here")
        return compiled

    async def create_rule(self, document: Mapping[str, Any]) -> RuleView:
        """Store a new rule; 409 when the name is taken."""
        compiled = await off_loop(COMPILE_TIMEOUT_SECONDS, self._compile, document)
        try:
            async with self._db.write() as session:
                row = Rule(name=compiled.name, document=dict(document))
                session.add(row)
        except IntegrityError:
            raise ConflictError(f"a rule named {compiled.name!r} already exists (PUT replaces it)") from None
        await self._engine.refresh()
        return RuleView(compiled, "api", row.created_at, row.updated_at)

    async def put_rule(self, name: str, document: Mapping[str, Any]) -> tuple[RuleView, bool]:
        """Create or replace the rule ``name``; ``(view, created)``."""
        if "name" in document and document["name"] != name:
            error = RuleError(str(document["name"]), "name", f"does not match the name in the path ({name!r})")
            raise _invalid([error])
        document = {"name": name, **document}
        compiled = await off_loop(COMPILE_TIMEOUT_SECONDS, self._compile, document)
        try:
            row, created = await self._store(name, document)
        except IntegrityError:  # another PUT created it meanwhile (there was no row to lock): replace it
            row, created = await self._store(name, document)
        await self._engine.refresh()
        return RuleView(compiled, "api", row.created_at, row.updated_at), created

    async def _store(self, name: str, document: Mapping[str, Any]) -> tuple[Rule, bool]:
        """Insert or replace the stored rule ``name``; ``(row, created)``."""
        async with self._db.write() as session:
            row = await session.get(Rule, name, with_for_update=True)
            if row is None:
                row = Rule(name=name, document=dict(document))
                session.add(row)
                return row, True
            row.document = dict(document)
            row.updated_at = utcnow()
            return row, False

    async def delete_rule(self, name: str) -> None:
        if self._file_rule(name) is not None:
            raise ConflictError(f"rule {name!r} is defined in the rules file, which is read-only here")
        async with self._db.write() as session:
            result = await session.execute(delete(Rule).where(Rule.name == name))
        if not getattr(result, "rowcount", 0):
            raise NotFoundError(f"no rule named {name!r}")
        await self._engine.refresh()

    @staticmethod
    def validate(body: object) -> tuple[list[CompiledRule], list[RuleError]]:
        """Compile one rule document or ``{"rules": [...]}`` without storing anything."""
        if isinstance(body, Mapping) and set(body) == {"rules"} and isinstance(body["rules"], list):
            return compile_rules(body["rules"])
        return compile_rules([body])

    async def list_firings(
        self, call_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[RuleFiring], str | None]:
        after: uuid.UUID | None = None
        if cursor:
            parts = decode_cursor(cursor)
            try:
                after = uuid.UUID(str(parts[0]))
            except (IndexError, ValueError):
                raise InvalidInputError(BAD_CURSOR) from None
        async with self._db.read() as session:
            if await session.get(Call, call_id) is None:
                raise NotFoundError(f"no call with id {call_id!r}")
            rows = await firings.list_firings(session, call_id, after=after, limit=limit + 1)
        return keyset_page(rows, limit, lambda firing: encode_cursor(str(firing.id)))
