"""Webhook authentication as pure functions of the raw request (before any JSON parsing)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping


def secret_header_ok(headers: Mapping[str, str], *, header: str, secret: str) -> bool:
    """The shared secret in ``header``, compared in constant time."""
    given = headers.get(header.lower()) or headers.get(header) or ""
    return hmac.compare_digest(given.encode(), secret.encode())
