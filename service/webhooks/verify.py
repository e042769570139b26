"""Webhook authentication as pure functions of the raw request, run before any JSON parsing.

Two modes, as Vapi's server credentials allow: a shared secret in a header (compared in constant
time), or HMAC — ``x-signature`` = hex HMAC-SHA256 of ``{x-timestamp}.{raw body}`` with the
timestamp in Unix seconds, accepted within ±300 s so that a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

HMAC_TOLERANCE_SECONDS = 300


def secret_header_ok(headers: Mapping[str, str], *, header: str, secret: str) -> bool:
    """The shared secret in ``header``, compared in constant time."""
    given = headers.get(header.lower()) or headers.get(header) or ""
    return hmac.compare_digest(given.encode(), secret.encode())


def hmac_signature(raw: bytes, *, timestamp: str, secret: str) -> str:
    return hmac.new(secret.encode(), timestamp.encode() + b"." + raw, hashlib.sha256).hexdigest()


def hmac_ok(
    headers: Mapping[str, str], raw: bytes, *, secret: str, now: float, tolerance: int = HMAC_TOLERANCE_SECONDS
) -> bool:
    """A valid ``x-signature`` for ``x-timestamp`` and the raw body, with a fresh timestamp."""
    timestamp = headers.get("x-timestamp", "")
    signature = headers.get("x-signature", "").removeprefix("sha256=")
    try:
        age = abs(now - int(timestamp))
    except ValueError:
        return False
    if age > tolerance:
        return False
    return hmac.compare_digest(signature.encode(), hmac_signature(raw, timestamp=timestamp, secret=secret).encode())


def authenticated(
    headers: Mapping[str, str],
    raw: bytes,
    *,
    secret_header: str,
    secret: str | None,
    hmac_secret: str | None,
    now: float,
) -> bool:
    """Whether the request passes one of the configured modes (all pass when none is configured)."""
    if secret is None and hmac_secret is None:
        return True
    if secret is not None and secret_header_ok(headers, header=secret_header, secret=secret):
        return True
    return hmac_secret is not None and hmac_ok(headers, raw, secret=hmac_secret, now=now)
