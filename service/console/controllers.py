"""HTTP surface of the console: the HTML pages and static files (no data, no auth), the live call feed
and the rule dry run (``/v1``, scoped like the rest of the API).

The pages are shells: the browser keeps the API key in ``sessionStorage`` and fetches everything from
``/v1`` with it, so nothing here ever sees a key outside the ``Authorization`` header.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import msgspec
from jinja2 import Environment, FileSystemLoader, select_autoescape
from litestar import Controller, Request, Response, get, post
from litestar.channels import ChannelsPlugin
from litestar.di import NamedDependency, Provide
from litestar.exceptions import PermissionDeniedException
from litestar.params import JSONBody, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage
from litestar.static_files import create_static_files_router
from litestar.status_codes import HTTP_200_OK
from litestar.types import ControllerRouterHandler

from service.auth import current_principal, scoped, until_revoked
from service.calls.controllers import call_out
from service.calls.ids import CallIdPath
from service.calls.service import CallService
from service.console.dryrun import DryRunService
from service.console.feed import CallFeed
from service.console.schemas import DryRunIn, DryRunOut
from service.db.engine import Database
from service.db.models import Call
from service.rules.schema import MILESTONES

HERE = Path(__file__).parent
KEEPALIVE_SECONDS = 15.0
# The pages hold an API key in sessionStorage: nothing but our own scripts may run, load or frame them.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; media-src 'self' blob:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

_templates = Environment(
    loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True), auto_reload=False
)


def page(template: str, **context: Any) -> Response[str]:
    html = _templates.get_template(template).render(**context)
    # Litestar appends "; charset=utf-8" to every text/* type itself.
    return Response(html, media_type="text/html", headers=SECURITY_HEADERS)


class ConsolePages(Controller):
    """``/console``: server-rendered shells; every figure on them comes from ``/v1`` in the browser."""

    path = "/console"
    include_in_schema = False

    @get("/", name="console:calls")
    async def calls(self) -> Response[str]:
        return page("calls.html", section="calls", title="Live calls")

    @get("/sign-in", name="console:sign-in")
    async def sign_in(self) -> Response[str]:
        return page("sign_in.html", section="sign-in", title="Sign in")

    @get("/calls/{call_id:str}", name="console:call")
    async def call(self, call_id: CallIdPath) -> Response[str]:
        return page("call.html", section="calls", title=f"Call {call_id}", call_id=call_id)

    @get("/rules", name="console:rules")
    async def rules(self) -> Response[str]:
        return page("rules.html", section="rules", title="Rules", milestones=MILESTONES)


def _nosniff(response: Response[Any]) -> Response[Any]:
    """Static JS and CSS are only ever what their extension says: browsers must not guess otherwise."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


console_static = create_static_files_router(
    "/console/static",
    directories=[HERE / "static"],
    name="console:static",
    include_in_schema=False,
    after_request=_nosniff,
)


def provide_feed(db: NamedDependency[Database], channels: NamedDependency[ChannelsPlugin]) -> CallFeed:
    return CallFeed(db, channels)


def provide_dry_runs(calls: NamedDependency[CallService]) -> DryRunService:
    return DryRunService(calls)


def _encode(call: Any) -> str:
    return msgspec.json.encode(call_out(call, show_monitor_urls=False)).decode()


def _call_messages(changed: list[Call], quiet_since: float) -> list[ServerSentEventMessage]:
    """One poll's events: each changed call, or a keep-alive comment after a quiet while."""
    if changed:
        return [ServerSentEventMessage(event="call", data=_encode(call)) for call in changed]
    if time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
        return [ServerSentEventMessage(comment="keep-alive")]
    return []


class ConsoleStreamController(Controller):
    path = "/v1/console"
    tags = ["console"]
    dependencies = {"feed": Provide(provide_feed, sync_to_thread=False)}

    @get(
        "/stream",
        operation_id="streamCallChanges",
        summary="Server-sent events: every call as it changes (the console's live pages)",
        description=(
            "`event: ready` once connected, then `event: call` with the call (as GET /v1/calls/{id}) each time "
            "it changes: status, timeline, recording. Changes of the last few seconds are sent first, so a "
            "client that opens the stream and then lists calls misses nothing. `callId` follows one call. "
            "A comment line every 15 s keeps idle connections open. The key is checked again every 2 s: once "
            "it is revoked the stream sends `event: revoked` and ends."
        ),
        media_type="text/event-stream",
        **scoped("calls:read"),
    )
    async def stream(
        self,
        request: Request[Any, Any, Any],
        feed: NamedDependency[CallFeed],
        call_id: Annotated[str | None, QueryParameter(name="callId", max_length=64)] = None,
    ) -> ServerSentEvent:
        async def messages() -> AsyncIterator[ServerSentEventMessage]:
            yield ServerSentEventMessage(event="ready", data="{}")
            quiet_since = time.monotonic()
            revoked = asyncio.create_task(until_revoked(request), name="console-stream-key-watch")
            try:
                async for changed in feed.changes(call_id):
                    if revoked.done():  # the feed polls every second: ended within seconds of a revocation
                        yield ServerSentEventMessage(event="revoked", data='{"reason": "API key revoked"}')
                        return
                    for message in _call_messages(changed, quiet_since):
                        yield message
                    if changed or time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                        quiet_since = time.monotonic()
            finally:
                revoked.cancel()

        return ServerSentEvent(messages(), headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@post(
    "/v1/rules/dry-run",
    operation_id="dryRunRule",
    summary="Replay a rule against a past call's timeline: what it would have done (nothing is sent)",
    description=(
        "Needs rules:read and calls:read (the answer shows the call's events). An invalid rule gives "
        "`valid: false` with every error, as POST /v1/rules/validate does."
    ),
    tags=["rules"],
    status_code=HTTP_200_OK,
    dependencies={"dry_runs": Provide(provide_dry_runs, sync_to_thread=False)},
    **scoped("rules:read"),
)
async def dry_run_rule(
    request: Request[Any, Any, Any], data: JSONBody[DryRunIn], dry_runs: NamedDependency[DryRunService]
) -> DryRunOut:
    if not current_principal(request).allows("calls:read"):
        raise PermissionDeniedException("this key lacks the 'calls:read' scope")
    return await dry_runs.run(data.rule, data.call_id)


CONSOLE_PAGES: list[ControllerRouterHandler] = [ConsolePages, console_static]
CONSOLE_API: list[ControllerRouterHandler] = [ConsoleStreamController, dry_run_rule]
