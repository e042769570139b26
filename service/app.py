"""The application factory: wires settings, database, storage, Vapi client and background work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import structlog
from litestar import Litestar, Router
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme

from service import __version__
from service.apikeys.service import ApiKeyService
from service.auth import require_scope
from service.bodies import GuardedRequest
from service.calls.controllers import CallController
from service.calls.service import CallService
from service.console.controllers import CONSOLE_API, CONSOLE_PAGES  # console
from service.db.engine import Database
from service.deliveries.controllers import WebhookEndpointController  # outbound webhooks
from service.deliveries.retry import RetryPolicy  # outbound webhooks
from service.deliveries.service import WebhookEndpointService  # outbound webhooks
from service.deliveries.worker import DeliveryWorker  # outbound webhooks
from service.errors import EXCEPTION_HANDLERS
from service.health.controllers import HealthController
from service.idempotency.service import IdempotencyService
from service.listen.controllers import live_listen
from service.listen.leases import LeaseKeeper, replica_id
from service.listen.relay import LiveRelay
from service.listen.session import ListenConfig, ListenSession
from service.listen.supervisor import ListenSupervisor
from service.metrics import Metrics, MetricsController
from service.openapi import document_problems
from service.recordings.controllers import RecordingController, list_recordings
from service.recordings.service import RecordingService
from service.recordings.storage import RecordingStorage, build_storage
from service.recordings.watch import WatchedStorage
from service.rules.controllers import FiringController, RuleController  # rules
from service.rules.engine import RuleEngine  # rules
from service.rules.files import load_rules_file  # rules
from service.rules.schema import RuleSetError  # rules
from service.rules.service import RuleService  # rules
from service.settings import ConfigurationError, Settings
from service.vapi.client import VapiClient
from service.vapi.monitors import MonitorUrlPolicy
from service.webhooks.controllers import VapiWebhookController
from service.webhooks.service import WebhookAuth, WebhookService

log = structlog.get_logger(__name__)


def _constant(value: Any) -> Provide:
    def provide() -> Any:
        return value

    return Provide(provide, use_cache=True, sync_to_thread=False)


def create_app(
    settings: Settings,
    *,
    http_client: httpx.AsyncClient | None = None,
    storage: RecordingStorage | None = None,
) -> Litestar:
    """Build the app. ``http_client`` and ``storage`` replace the external systems (tests, embedding)."""
    try:  # rules: a rules file with errors refuses start-up, listing them all
        file_rules = load_rules_file(settings.rules_file) if settings.rules_file else []
    except RuleSetError as exc:
        raise ConfigurationError(str(exc)) from None
    db = Database(settings.database_url)
    storage = WatchedStorage(storage or build_storage(settings.storage_url))  # write failures reach /readyz
    owns_http_client = http_client is None
    http = http_client or httpx.AsyncClient(
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        headers={"User-Agent": f"switchboard/{__version__}"},
    )
    vapi = VapiClient(
        http,
        base_url=settings.vapi_base_url,
        api_key=settings.vapi_api_key.get_secret_value() if settings.vapi_api_key else None,
        public_key=settings.vapi_public_key.get_secret_value() if settings.vapi_public_key else None,
        monitor_policy=MonitorUrlPolicy.for_vapi(
            vapi_base_url=settings.vapi_base_url, allow_private=settings.webhook_allow_private
        ),
        timeout=settings.vapi_timeout_seconds,
    )
    recordings = RecordingService(db, storage)
    api_keys = ApiKeyService(
        db, admin_key=settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
    )
    metrics = Metrics()
    listen_config = ListenConfig(
        sample_rate=settings.listen_sample_rate,
        channels=settings.listen_channels,
        connect_timeout=settings.listen_connect_timeout_seconds,
        idle_timeout=settings.listen_idle_timeout_seconds,
        max_frame_bytes=settings.listen_max_frame_bytes,
        read_interval=settings.listen_read_interval_ms / 1000,
    )

    def new_session(call_id: str, relay: LiveRelay) -> ListenSession:
        return ListenSession(
            call_id,
            db=db,
            storage=storage,
            recordings=recordings,
            vapi=vapi,
            config=listen_config,
            metrics=metrics,
            relay=relay,
            reconcile=calls.reconcile,
            rules=rule_engine,  # rules
        )

    supervisor = ListenSupervisor(
        new_session,
        leases=LeaseKeeper(db, owner=replica_id(), ttl_seconds=settings.listen_lease_seconds),
        metrics=metrics,
        maintain_interval=settings.listen_lease_seconds / 3,
    )
    calls = CallService(db, vapi, settings, supervisor)
    rule_engine = RuleEngine(db, calls.inject, metrics, file_rules=file_rules)  # rules
    rules = RuleService(db, rule_engine)  # rules
    webhooks = WebhookService(db, supervisor, metrics, auth=WebhookAuth.from_settings(settings), rules=rule_engine)
    # Outbound webhooks: the worker owns its own HTTP client (receivers are untrusted; not Vapi's pool).
    deliveries = DeliveryWorker(
        db,
        metrics=metrics,
        allow_private=settings.webhook_allow_private,
        policy=RetryPolicy.from_seconds(settings.webhook_retry_delays, settings.webhook_retry_max_age_seconds),
    )
    idempotency = IdempotencyService(db)
    webhook_endpoints = WebhookEndpointService(db, allow_private=settings.webhook_allow_private)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if settings.webhook_secret is None and settings.webhook_hmac_secret is None:
            log.warning(
                "NO WEBHOOK SECRET CONFIGURED: anyone who can reach /webhooks/vapi can forge call events; "
                "set SWITCHBOARD_WEBHOOK_SECRET"
            )
        await rule_engine.start()  # rules: before listen sessions, whose events it observes
        await idempotency.purge_expired()  # keys older than 24 h
        await webhooks.start()
        await supervisor.start()
        await deliveries.start()  # outbound webhooks
        log.info(
            "switchboard started",
            listen_sessions=supervisor.active,
            database="sqlite" if db.is_sqlite else "postgresql",
        )
        try:
            yield
        finally:
            await webhooks.close()
            await supervisor.close(settings.shutdown_timeout_seconds)
            await rule_engine.close(settings.shutdown_timeout_seconds)  # rules
            await deliveries.close(settings.shutdown_timeout_seconds)  # outbound webhooks
            if owns_http_client:
                await http.aclose()
            await storage.close()
            await db.dispose()
            log.info("switchboard stopped")

    api = Router(
        path="/",
        guards=[require_scope],
        route_handlers=[
            CallController,
            RecordingController,
            list_recordings,
            WebhookEndpointController,  # outbound webhooks
            RuleController,  # rules
            FiringController,  # rules
            live_listen,
            *CONSOLE_API,  # console
        ],
    )
    app = Litestar(
        route_handlers=[api, *CONSOLE_PAGES, VapiWebhookController, HealthController, MetricsController],
        dependencies={
            "settings": _constant(settings),
            "db": _constant(db),
            "storage": _constant(storage),
            "calls": _constant(calls),
            "webhooks": _constant(webhooks),
            "recordings": _constant(recordings),
            "metrics": _constant(metrics),
            "idempotency": _constant(idempotency),
            "supervisor": _constant(supervisor),
            "webhook_endpoints": _constant(webhook_endpoints),  # outbound webhooks
            "rules": _constant(rules),  # rules
        },
        state=State(
            {
                "api_keys": api_keys,
                "supervisor": supervisor,
                "deliveries": deliveries,  # outbound webhooks
                "db": db,
            }
        ),
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        request_class=GuardedRequest,  # JSON bodies: too deep or not UTF-8 is a 400, not a 500
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Switchboard",
            version=__version__,
            description="Call tracking, durable recordings, live control and rules for Vapi calls.",
            path="/schema",
            components=Components(
                security_schemes={
                    "apiKey": SecurityScheme(
                        type="http", scheme="bearer", description="API key; the role list is the scope needed"
                    ),
                    "vapiSecret": SecurityScheme(
                        type="apiKey", security_scheme_in="header", name="X-Vapi-Secret", description="Webhook secret"
                    ),
                }
            ),
        ),
        debug=False,
    )
    document_problems(app.openapi_schema)
    return app
