"""The application factory: wires settings, database, storage, Vapi client and background work."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import structlog
from litestar import Litestar, Router
from litestar.channels import ChannelsPlugin
from litestar.channels.backends.memory import MemoryChannelsBackend
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from redis.asyncio import Redis

from service import __version__
from service.analytics.controllers import AnalyticsController  # analytics
from service.analytics.service import AnalyticsService  # analytics
from service.analytics.worker import AnalyticsWorker  # analytics
from service.apidocs import SCHEMA_PATH, assets_router, render_plugins
from service.apikeys.service import ApiKeyService
from service.auth import require_scope
from service.bodies import GuardedRequest
from service.calls.announce import CallAnnouncer
from service.calls.catchup import CatchUp
from service.calls.changes import CallChanges
from service.calls.control import ControlChannel
from service.calls.controllers import CallController
from service.calls.forwarder import Forwarder  # the tap
from service.calls.service import CallService
from service.calls.upstream import UpstreamResolver, default_upstream, request_headers  # the tap
from service.calls.writer import CallWriter
from service.console.controllers import CONSOLE_API, CONSOLE_PAGES  # console
from service.console.feed import CallNotices
from service.db.engine import Database
from service.deliveries.controllers import WebhookEndpointController  # outbound webhooks
from service.deliveries.forwards import ForwardWorker  # the tap
from service.deliveries.retry import RetryPolicy  # outbound webhooks
from service.deliveries.service import WebhookEndpointService  # outbound webhooks
from service.deliveries.worker import DeliveryWorker  # outbound webhooks
from service.errors import EXCEPTION_HANDLERS
from service.health.controllers import HealthController
from service.idempotency.service import IdempotencyService
from service.lifecycle.archive import Archiver  # lifecycle
from service.lifecycle.controllers import delete_call, put_legal_hold  # lifecycle
from service.lifecycle.erasure import Eraser  # lifecycle
from service.lifecycle.worker import LifecycleWorker  # lifecycle
from service.listen.controllers import live_listen
from service.listen.journal import EventJournal
from service.listen.leases import LeaseKeeper, replica_id
from service.listen.relay import LiveRelay
from service.listen.session import CallTarget, ListenConfig, ListenSession
from service.listen.sharing import LiveSharing
from service.listen.supervisor import ListenSupervisor
from service.metrics import Metrics, MetricsController
from service.openapi import document_problems
from service.recordings.controllers import RecordingController, list_recordings
from service.recordings.service import RecordingService
from service.recordings.storage import RecordingStorage, build_storage
from service.recordings.vapi_copy import VapiCopyMarker, VapiCopyWorker
from service.recordings.watch import WatchedStorage
from service.rules.controllers import FiringController, RuleController  # rules
from service.rules.engine import FIRING_CONCURRENCY, RuleEngine  # rules
from service.rules.files import load_configured_rules  # rules
from service.rules.service import RuleService  # rules
from service.search.controllers import SearchController  # search
from service.search.index import TranscriptIndexer
from service.search.service import SearchService  # search
from service.settings import Settings
from service.tasks import Background
from service.vapi.client import VapiClient
from service.vapi.monitors import MonitorUrlPolicy
from service.webhooks.controllers import VapiWebhookController
from service.webhooks.relay import Relay  # the tap
from service.webhooks.service import WebhookAuth, WebhookService

log = structlog.get_logger(__name__)


def _constant(value: Any) -> Provide:
    def provide() -> Any:
        return value

    return Provide(provide, use_cache=True, sync_to_thread=False)


def insecure_public_url(settings: Settings) -> bool:
    """Vapi's own cloud (not a simulator) would post server messages to a plain-http public URL."""
    vapi_host = urlsplit(settings.vapi_base_url).hostname or ""
    vapi_is_vapi = vapi_host == "vapi.ai" or vapi_host.endswith(".vapi.ai")
    return bool(settings.public_url) and vapi_is_vapi and urlsplit(settings.public_url).scheme != "https"


def create_app(
    settings: Settings,
    *,
    http_client: httpx.AsyncClient | None = None,
    storage: RecordingStorage | None = None,
) -> Litestar:
    """Build the app. ``http_client`` and ``storage`` replace the external systems (tests, embedding)."""
    file_rules = load_configured_rules(settings.rules_file)  # rules: errors refuse start-up
    db = Database(settings.database_url)
    storage = WatchedStorage(storage or build_storage(settings.storage_url))  # write failures reach /readyz
    owns_http_client = http_client is None
    http = http_client or httpx.AsyncClient(
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=50),
        headers={"User-Agent": f"switchboard/{__version__}"},
    )
    # Control messages (rules, the API's say): a pool of their own, sized for the rule engine's firings.
    control_http = (
        httpx.AsyncClient(
            limits=httpx.Limits(max_connections=FIRING_CONCURRENCY * 2, max_keepalive_connections=FIRING_CONCURRENCY),
            headers={"User-Agent": f"switchboard/{__version__}"},
        )
        if owns_http_client
        else None  # an embedding's client carries control messages too
    )
    vapi = VapiClient(
        http,
        control_http=control_http,
        base_url=settings.vapi_base_url,
        api_key=settings.vapi_api_key.get_secret_value() if settings.vapi_api_key else None,
        public_key=settings.vapi_public_key.get_secret_value() if settings.vapi_public_key else None,
        monitor_policy=MonitorUrlPolicy.for_vapi(
            vapi_base_url=settings.vapi_base_url, allow_private=settings.webhook_allow_private
        ),
        timeout=settings.vapi_timeout_seconds,
    )
    metrics = Metrics()
    api_keys = ApiKeyService(
        db, admin_key=settings.admin_api_key.get_secret_value() if settings.admin_api_key else None
    )
    # Calls: one writer; what it commits reaches the subscribers below, in this order.
    changes = CallChanges()
    writer = CallWriter(db, changes)
    control = ControlChannel(db, vapi)
    calls = CallService(db, writer, control, vapi, settings)
    recordings = RecordingService(db, storage)
    rule_engine = RuleEngine(db, control, metrics, file_rules=file_rules)
    rules = RuleService(db, rule_engine)
    journal = EventJournal(db, changes)
    listen_config = ListenConfig(
        sample_rate=settings.listen_sample_rate,
        channels=settings.listen_channels,
        connect_timeout=settings.listen_connect_timeout_seconds,
        idle_timeout=settings.listen_idle_timeout_seconds,
        max_frame_bytes=settings.listen_max_frame_bytes,
        read_interval=settings.listen_read_interval_ms / 1000,
    )

    def new_session(call_id: str, relay: LiveRelay, target: CallTarget | None) -> ListenSession:
        return ListenSession(
            call_id,
            db=db,
            storage=storage,
            recordings=recordings,
            vapi=vapi,
            config=listen_config,
            metrics=metrics,
            relay=relay,
            journal=journal,
            reconcile=calls.reconcile,
            target=target,
        )

    supervisor = ListenSupervisor(
        new_session,
        leases=LeaseKeeper(db, owner=replica_id(), ttl_seconds=settings.listen_lease_seconds),
        journal=journal,
        metrics=metrics,
        maintain_interval=settings.listen_lease_seconds / 3,
    )
    # Live frames and call changes between replicas: Redis pub/sub when configured, else in memory.
    redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
    channels = ChannelsPlugin(
        backend=RedisChannelsPubSubBackend(redis=redis) if redis is not None else MemoryChannelsBackend(),
        arbitrary_channels_allowed=True,
    )
    notices = CallNotices(channels)
    db.after_commit(notices.committed)  # the console feed's push
    sharing = LiveSharing(channels, supervisor.relay, shared=redis is not None)
    changes.subscribe(TranscriptIndexer())  # search: each final utterance indexed with its event
    changes.subscribe(CallAnnouncer())  # outbound webhooks, in the change's transaction
    changes.subscribe(rule_engine)  # firings recorded with their milestones
    changes.subscribe(supervisor)  # leases taken with the change; sessions started after the commit
    # The tap (contract section 9): forwards to each call's upstream, relays what needs an answer.
    org_upstream = default_upstream(settings)
    forwards = ForwardWorker(
        db,
        http,
        headers_of=request_headers,
        default_upstream=org_upstream,
        policy=RetryPolicy.from_seconds(settings.webhook_retry_delays, settings.webhook_retry_max_age_seconds),
        timeout=settings.forward_timeout_seconds,
        metrics=metrics,
    )
    changes.subscribe(Forwarder(default_upstream=org_upstream, wake=forwards.wake))
    # Vapi's own recording, kept (contract section 10): a pending download with the end-of-call report.
    vapi_copies = VapiCopyWorker(
        db,
        storage,
        http,
        vapi,
        allow_private=settings.webhook_allow_private,
        first_retry_seconds=settings.vapi_recording_retry_seconds,
        poll_interval=min(5.0, settings.vapi_recording_retry_seconds),
    )
    if settings.vapi_recording_copy:
        changes.subscribe(VapiCopyMarker(wake=vapi_copies.wake))
    # Calls Vapi created while Switchboard was not listening: listed and imported (service.calls.catchup).
    catch_up = (
        CatchUp(db, writer, vapi, interval=settings.vapi_catch_up_seconds)
        if settings.vapi_api_key and settings.vapi_catch_up_seconds > 0
        else None
    )
    relay = Relay(http, db, UpstreamResolver(vapi, settings), settings, metrics)
    webhooks = WebhookService(
        writer, metrics, auth=WebhookAuth.from_settings(settings), relay=relay, inbound_upstream=org_upstream
    )
    # Outbound webhooks: the worker owns its own HTTP client (receivers are untrusted; not Vapi's pool).
    deliveries = DeliveryWorker(
        db,
        metrics=metrics,
        allow_private=settings.webhook_allow_private,
        policy=RetryPolicy.from_seconds(settings.webhook_retry_delays, settings.webhook_retry_max_age_seconds),
    )
    idempotency = IdempotencyService(db)
    eraser = Eraser(  # lifecycle
        db,
        storage,
        vapi=vapi if settings.vapi_api_key else None,
        metrics=metrics,
        claim_seconds=settings.erasure_claim_seconds,
    )
    lifecycle = LifecycleWorker(  # lifecycle
        db,
        eraser,
        metrics,
        retention=settings.retention,
        sweep_seconds=settings.retention_sweep_seconds,
        delivery_history=settings.delivery_history,
        archiver=Archiver(db, storage) if settings.archive_format == "flac" else None,
    )
    search = SearchService(db)  # search
    analytics = AnalyticsWorker(  # analytics
        db,
        recordings,
        storage,
        metrics,
        writer,  # a completed analysis is a call change: call.analyzed (webhook, rules milestone)
        mode=settings.analytics_vad_mode,
        poll_interval=settings.analytics_poll_seconds,
    )
    webhook_endpoints = WebhookEndpointService(db, allow_private=settings.webhook_allow_private)

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if settings.webhook_secret is None and settings.webhook_hmac_secret is None:
            log.warning(
                "NO WEBHOOK SECRET CONFIGURED: anyone who can reach /webhooks/vapi can forge call events; "
                "set SWITCHBOARD_WEBHOOK_SECRET"
            )
        if insecure_public_url(settings):
            log.warning(
                "SWITCHBOARD_PUBLIC_URL is not https: Vapi's own servers will not deliver server messages "
                "to it reliably, and the webhook secret would travel in clear text",
                public_url=settings.public_url,
            )
        await idempotency.purge_expired()  # keys older than 24 h
        # Consumers before producers; closed in reverse, so that what producers hand over at the end
        # (a webhook's firings, a session's last events) still finds its consumer running.
        background: list[Background] = [
            deliveries,
            forwards,
            lifecycle,
            rule_engine,
            supervisor,
            sharing,
            webhooks,
        ]
        if settings.analytics_enabled:  # a consumer of finalised recordings, a producer of call.analyzed milestones
            background.insert(background.index(rule_engine) + 1, analytics)
        if settings.vapi_recording_copy:
            background.insert(2, vapi_copies)
        if catch_up is not None:  # a producer of call changes: after their consumers
            background.append(catch_up)
        await channels.__aenter__()  # the channels outlive every part that publishes or listens
        for part in background:
            await part.start()
        log.info(
            "switchboard started",
            listen_sessions=supervisor.active,
            database="sqlite" if db.is_sqlite else "postgresql",
        )
        try:
            yield
        finally:
            for part in reversed(background):
                await part.close(settings.shutdown_timeout_seconds)
            await channels.__aexit__(None, None, None)
            if redis is not None:
                await redis.aclose()
            if owns_http_client:
                await http.aclose()
                assert control_http is not None
                await control_http.aclose()
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
            delete_call,  # lifecycle
            put_legal_hold,  # lifecycle
            SearchController,  # search
            AnalyticsController,  # analytics
            *CONSOLE_API,  # console
        ],
    )
    app = Litestar(
        route_handlers=[
            api,
            *CONSOLE_PAGES,
            VapiWebhookController,
            HealthController,
            MetricsController,
            assets_router(),  # /schema's Swagger UI, served locally
        ],
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
            "sharing": _constant(sharing),
            "channels": _constant(channels),
            "webhook_endpoints": _constant(webhook_endpoints),  # outbound webhooks
            "rules": _constant(rules),  # rules
            "eraser": _constant(eraser),  # lifecycle
            "search": _constant(search),  # search
            "analytics": _constant(AnalyticsService(db)),  # analytics
        },
        state=State({"api_keys": api_keys}),  # read by the authentication guard
        lifespan=[lifespan],
        exception_handlers=EXCEPTION_HANDLERS,
        request_class=GuardedRequest,  # JSON bodies: too deep or not UTF-8 is a 400, not a 500
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Switchboard",
            version=__version__,
            description="Call tracking, durable recordings, live control and rules for Vapi calls.",
            path=SCHEMA_PATH,
            render_plugins=render_plugins(),
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
        logging_config=None,  # service.logging configures logging once, for every library
    )
    document_problems(app.openapi_schema)
    return app
