"""``/healthz`` (the process answers) and ``/readyz`` (database and storage reachable)."""

from __future__ import annotations

import asyncio

import msgspec
import structlog
from litestar import Controller, Response, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec

from service.db.engine import Database
from service.recordings.storage import RecordingStorage

Db = NamedDependency[Database]
Storage = NamedDependency[RecordingStorage]

log = structlog.get_logger(__name__)
CHECK_TIMEOUT_SECONDS = 3.0


class Health(msgspec.Struct):
    status: str
    checks: dict[str, str] = msgspec.field(default_factory=dict)


class HealthController(Controller):
    tags = ["service"]

    @get("/healthz", operation_id="healthz", summary="Liveness")
    async def healthz(self) -> Health:
        return Health(status="ok")

    @get(
        "/readyz",
        operation_id="readyz",
        summary="Readiness: database and storage reachable",
        responses={503: ResponseSpec(Health, description="Database or storage unreachable")},
    )
    async def readyz(self, db: Db, storage: Storage) -> Response[Health]:
        checks: dict[str, str] = {}
        for name, probe in (("database", db.ping), ("storage", storage.check)):
            try:
                async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
                    await probe()
                checks[name] = "ok"
            except Exception as exc:  # readiness reports any failure, it never raises
                log.warning("readiness check failed", check=name, error=type(exc).__name__)
                checks[name] = f"failed: {type(exc).__name__}"
        ready = all(value == "ok" for value in checks.values())
        return Response(Health("ok" if ready else "unavailable", checks), status_code=200 if ready else 503)
