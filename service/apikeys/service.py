"""Creating, listing, revoking and checking API keys.

A key is ``sb_`` + 32 random bytes (base64url). Only its SHA-256 is stored: with that much entropy a
fast hash is as safe as a slow one, and lookups stay one indexed equality. ``last_used_at`` is
refreshed at most once a minute per key, so authentication costs no write per request.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import or_, select, update

from service.db.engine import Database
from service.db.models import ApiKey, utcnow
from service.errors import ConflictError, InvalidInputError, NotFoundError

KEY_PREFIX = "sb_"
PREFIX_CHARS = 10
SCOPES = (
    "calls:read",
    "calls:write",
    "calls:delete",
    "recordings:read",
    "rules:read",
    "rules:write",
    "webhooks:write",
    "admin",
)
TOUCH_INTERVAL = dt.timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a stored key or the bootstrap admin key."""

    name: str
    scopes: frozenset[str]
    key_id: uuid.UUID | None = None

    @property
    def identity(self) -> str:
        """Stable per key: idempotency keys are scoped to it."""
        return str(self.key_id) if self.key_id else self.name

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes

    def allows(self, scope: str) -> bool:
        return self.is_admin or scope in self.scopes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_scopes(value: str | Sequence[str]) -> list[str]:
    """Scopes from ``"a,b"`` or a list; unknown ones are refused with the list of valid ones."""
    items = value.split(",") if isinstance(value, str) else list(value)
    scopes = sorted({item.strip() for item in items if item.strip()})
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown or not scopes:
        raise InvalidInputError(
            f"unknown scope(s) {', '.join(unknown)}" if unknown else "at least one scope is needed",
            validScopes=list(SCOPES),
        )
    return scopes


class ApiKeyService:
    def __init__(self, db: Database, *, admin_key: str | None) -> None:
        self._db = db
        self._admin_key = admin_key.encode() if admin_key else None
        self._touched: dict[uuid.UUID, dt.datetime] = {}

    async def create(self, name: str, scopes: Sequence[str]) -> tuple[ApiKey, str]:
        """A new key; the plain key is returned here and never again."""
        name = name.strip()
        if not name:
            raise InvalidInputError("a key needs a name")
        key = KEY_PREFIX + secrets.token_urlsafe(32)
        row = ApiKey(name=name, prefix=key[:PREFIX_CHARS], key_hash=hash_key(key), scopes=parse_scopes(scopes))
        async with self._db.write() as session:
            # Names tell keys apart in lists and logs: an active key's name is not given twice (a revoked
            # key's may be reused, as when a key is rotated).
            taken = select(ApiKey.id).where(ApiKey.name == name, ApiKey.revoked_at.is_(None)).limit(1)
            if await session.scalar(taken) is not None:
                raise ConflictError(f"an active key is already named {name!r}: choose another name or revoke it first")
            session.add(row)
        return row, key

    async def list(self) -> list[ApiKey]:
        async with self._db.read() as session:
            return list((await session.scalars(select(ApiKey).order_by(ApiKey.created_at))).all())

    async def revoke(self, id_or_prefix: str) -> ApiKey:
        """Revoke by id or by the key's prefix, as ``apikeys list`` shows it (``sb_xxxxxxx…``) or without
        the ellipsis."""
        id_or_prefix = id_or_prefix.strip().removesuffix("…").removesuffix("...")
        condition = ApiKey.prefix == id_or_prefix
        with contextlib.suppress(ValueError):  # not an id: a prefix
            condition = or_(condition, ApiKey.id == uuid.UUID(id_or_prefix))
        async with self._db.write() as session:
            rows = list((await session.scalars(select(ApiKey).where(condition))).all())
            if len(rows) != 1:
                raise NotFoundError(f"no single key matches {id_or_prefix!r}")
            row = rows[0]
            row.revoked_at = row.revoked_at or utcnow()
            return row

    async def authenticate(self, token: str) -> Principal | None:
        if self._admin_key and hmac.compare_digest(token.encode(), self._admin_key):
            return Principal("admin (bootstrap)", frozenset({"admin"}))
        if not token.startswith(KEY_PREFIX):
            return None
        async with self._db.read() as session:
            row = await session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_key(token)))
        if row is None or row.revoked_at is not None:
            return None
        await self._touch(row.id)
        return Principal(row.name, frozenset(row.scopes), row.id)

    async def is_revoked(self, principal: Principal) -> bool:
        """Whether the stored key behind ``principal`` was revoked (or removed) since it authenticated;
        long-lived streams ask this every few seconds. The bootstrap admin key is configuration."""
        if principal.key_id is None:
            return False
        async with self._db.read() as session:
            row = await session.execute(select(ApiKey.revoked_at).where(ApiKey.id == principal.key_id))
            found = row.first()
        return found is None or found[0] is not None

    async def _touch(self, key_id: uuid.UUID) -> None:
        now = utcnow()
        last = self._touched.get(key_id)
        if last is not None and now - last < TOUCH_INTERVAL:
            return
        self._touched[key_id] = now
        async with self._db.write() as session:
            await session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id)
                .values(last_used_at=now)
                .execution_options(synchronize_session=False)
            )
