"""The upstream of a call: the customer's own server, which Switchboard stands in for (contract §9).

Vapi sends a call's server messages to exactly one URL. When Switchboard puts its own there, the
server that was there before — the caller's ``assistantOverrides.server``, else the assistant's, else
the phone number's, else the org-wide ``SWITCHBOARD_FORWARD_URL`` — becomes the call's *upstream*:
it gets what it would have got (forwarded), and answers what needs an answer (relayed).

Stored on the call as a JSON object (``Call.upstream``)::

    {"url", "headers", "secret"?, "timeoutSeconds"?, "source", "serverMessages"?}

``source`` is ``call``, ``assistant``, ``phone-number`` or ``default``; ``serverMessages`` is the
call's own subscription (absent: Vapi's default list).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from service.errors import UpstreamError
from service.settings import Settings
from service.vapi.client import VapiClient
from service.vapi.messages import DEFAULT_SERVER_MESSAGES

log = structlog.get_logger(__name__)

# The legacy per-server secret (``serverUrlSecret``, ``server.secret``) travels in this header.
SECRET_HEADER = "X-Vapi-Secret"  # noqa: S105 - a header name


def server_upstream(server: object, *, source: str, messages: object = None) -> dict[str, Any] | None:
    """An upstream from a Vapi ``Server`` object (vapi-server-sdk 3.0.0 ``Server``: url, headers,
    timeoutSeconds, backoffPlan; ``secret`` as older API versions had it), or None without a url."""
    if not isinstance(server, Mapping) or not isinstance(server.get("url"), str) or not server["url"]:
        return None
    upstream: dict[str, Any] = {"url": server["url"], "source": source}
    headers = server.get("headers")
    upstream["headers"] = {str(k): str(v) for k, v in headers.items()} if isinstance(headers, Mapping) else {}
    if isinstance(server.get("secret"), str):
        upstream["secret"] = server["secret"]
    if isinstance(server.get("timeoutSeconds"), int | float) and not isinstance(server["timeoutSeconds"], bool):
        upstream["timeoutSeconds"] = float(server["timeoutSeconds"])
    if isinstance(messages, list):
        upstream["serverMessages"] = [str(item) for item in messages]
    return upstream


def server_of(holder: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The ``server`` of an assistant or its overrides, or the legacy ``serverUrl``/``serverUrlSecret``
    pair as a server object (older assistants and samples still use it)."""
    server = holder.get("server")
    if isinstance(server, Mapping) and server.get("url"):
        return server
    if isinstance(holder.get("serverUrl"), str):
        legacy: dict[str, Any] = {"url": holder["serverUrl"]}
        if isinstance(holder.get("serverUrlSecret"), str):
            legacy["secret"] = holder["serverUrlSecret"]
        return legacy
    return None


def default_upstream(settings: Settings, *, messages: object = None) -> dict[str, Any] | None:
    """``SWITCHBOARD_FORWARD_URL`` with ``SWITCHBOARD_FORWARD_HEADERS``, or None when not set."""
    if settings.forward_url is None:
        return None
    server = {"url": settings.forward_url, "headers": dict(settings.forward_headers)}
    return server_upstream(server, source="default", messages=messages)


def subscription(upstream: Mapping[str, Any] | None) -> tuple[str, ...]:
    """What the upstream subscribed to: its ``serverMessages``, else Vapi's default list."""
    listed = (upstream or {}).get("serverMessages")
    return tuple(listed) if isinstance(listed, list) else DEFAULT_SERVER_MESSAGES


def request_headers(upstream: Mapping[str, Any]) -> dict[str, str]:
    """The headers Vapi would send the upstream: JSON, its static headers, its legacy secret."""
    headers = {"Content-Type": "application/json", **upstream.get("headers", {})}
    if isinstance(upstream.get("secret"), str):
        headers[SECRET_HEADER] = upstream["secret"]
    return headers


@dataclass(slots=True)
class _Cached:
    value: dict[str, Any] | None
    until: float


@dataclass(slots=True)
class UpstreamResolver:
    """Finds a call's upstream, reading assistants and phone numbers from Vapi (cached briefly: a
    campaign places many calls with one assistant, and a dashboard change shows within a minute).
    Concurrent lookups of one object share one request: a dialer placing a burst of calls with one
    assistant costs Vapi one read, not one per call."""

    vapi: VapiClient
    settings: Settings
    clock: Callable[[], float] = time.monotonic
    _cache: dict[str, _Cached] = field(default_factory=dict)
    _reading: dict[str, asyncio.Future[dict[str, Any] | None]] = field(default_factory=dict)

    async def for_outbound(
        self, overrides: Mapping[str, Any], *, assistant_id: str | None, phone_number_id: str | None
    ) -> dict[str, Any] | None:
        """The upstream of a call placed with these ``assistantOverrides`` (first found wins)."""
        assistant = await self._lookup(f"assistant:{assistant_id}", self.vapi.get_assistant, assistant_id)
        messages = overrides.get("serverMessages", (assistant or {}).get("serverMessages"))
        found = server_upstream(server_of(overrides), source="call", messages=messages)
        if found is None and assistant is not None:
            found = server_upstream(server_of(assistant), source="assistant", messages=messages)
        if found is None:
            number = await self._lookup(f"phone-number:{phone_number_id}", self.vapi.get_phone_number, phone_number_id)
            found = server_upstream((number or {}).get("server"), source="phone-number", messages=messages)
        return found or default_upstream(self.settings, messages=messages)

    async def for_assistant_answer(self, answer: Mapping[str, Any]) -> dict[str, Any] | None:
        """The upstream of an inbound call, from the upstream's answer to its ``assistant-request``:
        the answer's override server, its inline assistant's, its ``assistantId``'s, else the default."""
        overrides: Any = answer.get("assistantOverrides") or {}
        assistant: Any = answer.get("assistant")
        assistant_id = answer.get("assistantId")
        if not isinstance(assistant, Mapping) and isinstance(assistant_id, str):
            assistant = await self._lookup(f"assistant:{assistant_id}", self.vapi.get_assistant, assistant_id)
        if not isinstance(overrides, Mapping):
            overrides = {}
        if not isinstance(assistant, Mapping):
            assistant = None
        messages = overrides.get("serverMessages", (assistant or {}).get("serverMessages"))
        found = server_upstream(server_of(overrides), source="call", messages=messages)
        if found is None and assistant is not None:
            found = server_upstream(server_of(assistant), source="assistant", messages=messages)
        return found or default_upstream(self.settings, messages=messages)

    async def _lookup(
        self, key: str, fetch: Callable[[str], Awaitable[dict[str, Any]]], object_id: str | None
    ) -> dict[str, Any] | None:
        """The Vapi object, cached; None when there is no id or Vapi cannot say (the next source wins)."""
        if not object_id:
            return None
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None and cached.until > now:
            return cached.value
        reading = self._reading.get(key)
        if reading is None:  # one read per key at a time, in a task of its own: whoever asks next shares
            reading = self._reading[key] = asyncio.ensure_future(self._read_once(key, fetch, object_id))
        # A caller that gives up (a relay's deadline) must not cancel the read the others wait for.
        return await asyncio.shield(reading)

    async def _read_once(
        self, key: str, fetch: Callable[[str], Awaitable[dict[str, Any]]], object_id: str
    ) -> dict[str, Any] | None:
        try:
            return await self._read(key, fetch, object_id)
        finally:
            del self._reading[key]

    async def _read(
        self, key: str, fetch: Callable[[str], Awaitable[dict[str, Any]]], object_id: str
    ) -> dict[str, Any] | None:
        now = self.clock()
        value: dict[str, Any] | None
        try:
            value = await fetch(object_id)
        except UpstreamError as exc:
            # Not fatal: placing the call matters more than finding its upstream. Logged; a 404 is an
            # answer (no such object: the next source wins) and is cached like one, anything else is not.
            log.warning("could not read the upstream's server from Vapi", object=key.partition(":")[0], error=str(exc))
            if exc.extra.get("vapiStatus") != 404:
                return None
            value = None
        if len(self._cache) > 10_000:  # bounded: stale entries go first
            self._cache = {k: v for k, v in self._cache.items() if v.until > now}
        self._cache[key] = _Cached(value, now + self.settings.upstream_cache_seconds)
        return value
