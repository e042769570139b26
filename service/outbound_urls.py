"""Which URLs Switchboard may send requests to (SSRF protection): outbound webhook endpoints, the
tap's upstreams, and the listen and control URLs of calls.

An endpoint URL is chosen by an API client, but the request leaves from inside our network: without a
check, ``http://169.254.169.254/…`` (cloud metadata), ``http://localhost:5432`` or any RFC 1918 host
would become reachable through us. So the host is resolved and every address it resolves to must be
globally routable, unless ``SWITCHBOARD_WEBHOOK_ALLOW_PRIVATE=1`` (development, tests).

The check runs twice: when the endpoint is created (a clear 422) and before every delivery attempt,
because DNS answers change. At delivery time the request is then sent to the very address that was
checked (see :func:`pinned_request_target`), so a rebinding DNS server cannot swap in a private
address between the check and the connection.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# host, port → the addresses the host resolves to (in resolver order).
Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]

MAX_URL_LENGTH = 2048
RESOLVE_TIMEOUT_SECONDS = 5.0
ALLOW_PRIVATE_HINT = "set SWITCHBOARD_WEBHOOK_ALLOW_PRIVATE=1 to allow private destinations (development only)"

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated ::a.b.c.d


class UnsafeUrlError(ValueError):
    """The URL is malformed, does not resolve, or points somewhere webhooks must not go."""


@dataclass(frozen=True, slots=True)
class CheckedUrl:
    """A URL that passed the check, with the addresses its host name resolved to (empty for an IP
    literal, or when private destinations are allowed and nothing was resolved)."""

    url: str
    parts: SplitResult
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def parse_webhook_url(url: str) -> tuple[SplitResult, str, int]:
    """Syntax only: an absolute http(s) URL with a host. Returns the parts, the host and the port."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrlError(f"the URL is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() for ch in url):
        raise UnsafeUrlError("the URL contains whitespace")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed "[" of an IPv6 literal
        raise UnsafeUrlError(f"the URL cannot be parsed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise UnsafeUrlError(f"the URL must start with http:// or https://, not {parts.scheme or 'nothing'}")
    host = parts.hostname
    if not host:
        raise UnsafeUrlError("the URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeUrlError("the URL's port is not a number between 0 and 65535") from None
    if port == 0:
        raise UnsafeUrlError("the URL's port must not be 0")
    try:
        httpx.URL(url)  # what the sender will have to accept
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise UnsafeUrlError(f"the URL is not valid: {exc}") from None
    return parts, host, port


def _embedded_ipv4(address: IPAddress) -> list[IPAddress]:
    """The IPv4 addresses an IPv6 address carries and can lead to (mapped ``::ffff:a.b.c.d``,
    IPv4-compatible ``::a.b.c.d``, NAT64 ``64:ff9b::/96`` and ``64:ff9b:1::/48``, 6to4 ``2002::/16``,
    Teredo ``2001::/32``: its server and client), else none."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    embedded: list[IPAddress] = []
    if address.ipv4_mapped is not None:
        embedded.append(address.ipv4_mapped)
    compatible = address in _IPV4_COMPATIBLE and int(address) >> 24 != 0  # not ::, ::1 or ::0.x.y.z
    if address in _NAT64 or address in _NAT64_LOCAL or compatible:
        embedded.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    if address.sixtofour is not None:
        embedded.append(address.sixtofour)
    if address.teredo is not None:
        embedded.extend(address.teredo)
    return embedded


def refusal_reason(address: IPAddress) -> str | None:
    """Why webhooks must not go to ``address`` (``None``: a public unicast address).

    Python's ``is_global`` alone is not enough on 3.11 (it calls multicast and some special-purpose
    ranges global), hence the explicit checks first.
    """
    embedded = _embedded_ipv4(address)  # 2002:7f00:1::1 is "global", yet 6to4 for 127.0.0.1
    for ip in embedded:
        if (reason := _refusal_reason(ip)) is not None:
            return f"{reason} ({ip}, embedded in {address})"
    return None if embedded else _refusal_reason(address)


def _refusal_reason(ip: IPAddress) -> str | None:
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved:
        return "a reserved address"
    if not ip.is_global or ip in ipaddress.IPv4Network("192.0.0.0/24"):
        return "not a globally routable address"
    return None


async def resolve_host(host: str, port: int) -> list[IPAddress]:
    """Resolve with the system resolver (``getaddrinfo`` runs in asyncio's thread pool), time-limited."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    addresses: list[IPAddress] = []
    for _family, _type, _proto, _canonname, sockaddr in infos:
        # IPv6 scoped addresses come back as "fe80::1%eth0"; the scope does not change the verdict.
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


async def check_webhook_url(url: str, *, allow_private: bool, resolver: Resolver = resolve_host) -> CheckedUrl:
    """Parse ``url`` and, unless private destinations are allowed, resolve it and refuse it when any
    address it resolves to is not public (one bad answer is enough: the client could pick it)."""
    parts, host, port = parse_webhook_url(url)
    if allow_private:
        return CheckedUrl(url, parts, host, port, ())
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            addresses = await resolver(host, port)
        except (OSError, TimeoutError, UnicodeError, ValueError) as exc:  # Unicode: not IDNA-encodable
            raise UnsafeUrlError(f"the host {host!r} does not resolve ({type(exc).__name__}: {exc})") from None
        if not addresses:
            raise UnsafeUrlError(f"the host {host!r} does not resolve")
    for address in addresses:
        reason = refusal_reason(address)
        if reason is not None:
            shown = host if literal is not None else f"{host!r} resolves to {address}, which"
            raise UnsafeUrlError(f"the URL's host {shown} is {reason}; {ALLOW_PRIVATE_HINT}")
    # A literal needs no pinning: the connection goes to exactly that address.
    return CheckedUrl(url, parts, host, port, () if literal is not None else tuple(addresses))


def pinned_request_target(checked: CheckedUrl) -> tuple[str, dict[str, str], dict[str, str]]:
    """The URL, extra headers and httpx extensions that send the request to the checked address.

    The URL's host is replaced by the first checked address; ``Host`` keeps the name for virtual
    hosting and ``sni_hostname`` keeps it for TLS (SNI and certificate verification against the name).
    Without resolved addresses (private destinations allowed, or an IP literal) the URL is used as is.
    """
    if not checked.addresses:
        return checked.url, {}, {}
    address = checked.addresses[0]
    netloc_host = f"[{address}]" if address.version == 6 else str(address)
    default_port = 443 if checked.parts.scheme == "https" else 80
    netloc = netloc_host if checked.port == default_port else f"{netloc_host}:{checked.port}"
    if checked.parts.username is not None:
        userinfo = checked.parts.username + (f":{checked.parts.password}" if checked.parts.password else "")
        netloc = f"{userinfo}@{netloc}"
    url = checked.parts._replace(netloc=netloc).geturl()
    host_header = checked.host if checked.port == default_port else f"{checked.host}:{checked.port}"
    extensions = {"sni_hostname": checked.host} if checked.parts.scheme == "https" else {}
    return url, {"Host": host_header}, extensions
