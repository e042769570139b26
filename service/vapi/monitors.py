"""Which monitor URLs (a call's ``listenUrl`` and ``controlUrl``) Switchboard connects to.

They arrive in webhooks and Vapi's answers, and Switchboard connects to them with the Vapi public key
when the call's monitor auth is on. A forged webhook (a leaked secret) could point them at an
internal service: so they pass the same address rules as outbound webhooks
(``service.outbound_urls``) before any connection, with two exceptions: everything is allowed with
``SWITCHBOARD_WEBHOOK_ALLOW_PRIVATE=1`` (development), and the host of ``SWITCHBOARD_VAPI_BASE_URL``
is trusted as Vapi itself (a local simulator on 127.0.0.1 in development and tests).

Verdicts are cached per host for :data:`CACHE_SECONDS` (a control POST is on the rules' latency path).
"""

from __future__ import annotations

import time
from urllib.parse import urlsplit

from service.outbound_urls import Resolver, UnsafeUrlError, check_webhook_url, resolve_host

CACHE_SECONDS = 60.0
_HTTP_SCHEME = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


class MonitorUrlPolicy:
    """Checks a monitor URL before Switchboard connects to it (:meth:`check`)."""

    def __init__(
        self, *, allow_private: bool, trusted_hosts: frozenset[str], resolver: Resolver = resolve_host
    ) -> None:
        self._allow_private = allow_private
        self._trusted = frozenset(host.lower() for host in trusted_hosts)
        self._resolver = resolver
        self._verdicts: dict[tuple[str, int], tuple[float, str | None]] = {}  # → (expiry, refusal)

    @classmethod
    def for_vapi(cls, *, vapi_base_url: str, allow_private: bool) -> MonitorUrlPolicy:
        """The policy trusting the host of Vapi's API URL."""
        host = urlsplit(vapi_base_url).hostname
        return cls(allow_private=allow_private, trusted_hosts=frozenset({host} if host else ()))

    async def check(self, url: str) -> None:
        """Return when Switchboard may connect to ``url``; :class:`UnsafeUrlError` says why not."""
        parts = urlsplit(url)
        scheme = _HTTP_SCHEME.get(parts.scheme)
        if scheme is None:
            raise UnsafeUrlError(f"a monitor URL must be ws(s):// or http(s)://, not {parts.scheme or 'nothing'}")
        as_http = parts._replace(scheme=scheme).geturl()
        host = (parts.hostname or "").lower()
        if self._allow_private or host in self._trusted:
            return
        key = (host, parts.port or 0)
        cached = self._verdicts.get(key)
        if cached is None or cached[0] < time.monotonic():
            try:
                await check_webhook_url(as_http, allow_private=False, resolver=self._resolver)
                refusal = None
            except UnsafeUrlError as exc:
                refusal = str(exc)
            cached = self._verdicts[key] = (time.monotonic() + CACHE_SECONDS, refusal)
        if cached[1] is not None:
            raise UnsafeUrlError(cached[1])
