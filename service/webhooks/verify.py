"""Webhook authentication as pure functions of the raw request, run before any JSON parsing.

Two modes, as Vapi's server credentials allow (contract section 9):

- a shared secret in a header (``X-Vapi-Secret`` or the configured one), optionally ``Bearer ``
  prefixed (Vapi's Bearer credential with ``bearerPrefixEnabled``), compared in constant time;
- HMAC, as Vapi's HMAC credential configures it: algorithm (sha256, sha512, sha1), encoding (hex,
  base64), signature and timestamp header names, a signature prefix (``sha256=``), and the signed
  payload (``{timestamp}.{body}`` or ``{body}``). The timestamp may be in seconds or milliseconds (Vapi
  does not document which; told apart by size) and must be within ±300 s, so that a captured request
  cannot be replayed later.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

HMAC_TOLERANCE_SECONDS = 300
# A timestamp above this is in milliseconds (1e11 s is the year 5138; 1e11 ms is 1973).
MILLISECONDS_ABOVE = 100_000_000_000


@dataclass(frozen=True, slots=True)
class HmacScheme:
    """How the HMAC signature is made (the defaults are Vapi's)."""

    algorithm: Literal["sha256", "sha512", "sha1"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    signature_header: str = "x-signature"
    timestamp_header: str = "x-timestamp"
    prefix: str = ""
    payload_format: Literal["{timestamp}.{body}", "{body}"] = "{timestamp}.{body}"

    @property
    def signs_timestamp(self) -> bool:
        return "{timestamp}" in self.payload_format


DEFAULT_HMAC = HmacScheme()


def _header(headers: Mapping[str, str], name: str) -> str:
    return headers.get(name.lower()) or headers.get(name) or ""


def secret_header_ok(headers: Mapping[str, str], *, header: str, secret: str) -> bool:
    """The shared secret in ``header``, bare or ``Bearer``-prefixed, compared in constant time."""
    given = _header(headers, header)
    if given[:7].lower() == "bearer ":
        given = given[7:]
    return hmac.compare_digest(given.encode(), secret.encode())


def hmac_signature(raw: bytes, *, timestamp: str, secret: str, scheme: HmacScheme = DEFAULT_HMAC) -> str:
    """The signature of ``raw`` (and ``timestamp``, when the payload format has it), with its prefix."""
    payload = timestamp.encode() + b"." + raw if scheme.signs_timestamp else raw
    digest = hmac.new(secret.encode(), payload, getattr(hashlib, scheme.algorithm))
    encoded = digest.hexdigest() if scheme.encoding == "hex" else base64.b64encode(digest.digest()).decode()
    return scheme.prefix + encoded


def timestamp_seconds(value: str) -> float | None:
    """A Unix timestamp in seconds or milliseconds, as seconds; None when it is not a number."""
    try:
        number = float(value)
    except ValueError:
        return None
    return number / 1000 if number > MILLISECONDS_ABOVE else number


def hmac_ok(
    headers: Mapping[str, str],
    raw: bytes,
    *,
    secret: str,
    now: float,
    scheme: HmacScheme = DEFAULT_HMAC,
    tolerance: int = HMAC_TOLERANCE_SECONDS,
) -> bool:
    """A valid signature for the raw body (and a fresh timestamp, when one is signed)."""
    timestamp = _header(headers, scheme.timestamp_header)
    signature = _header(headers, scheme.signature_header)
    if scheme.signs_timestamp or timestamp:
        seconds = timestamp_seconds(timestamp)
        if seconds is None or abs(now - seconds) > tolerance:
            return False
    expected = hmac_signature(raw, timestamp=timestamp, secret=secret, scheme=scheme)
    if not scheme.prefix and "=" in signature[:8] and scheme.encoding == "hex":
        signature = signature.partition("=")[2]  # an unconfigured "sha256=" prefix, as before
    return hmac.compare_digest(signature.encode(), expected.encode())


def authenticated(
    headers: Mapping[str, str],
    raw: bytes,
    *,
    secret_header: str,
    secret: str | None,
    hmac_secret: str | None,
    now: float,
    scheme: HmacScheme = DEFAULT_HMAC,
) -> bool:
    """Whether the request passes one of the configured modes (all pass when none is configured)."""
    if secret is None and hmac_secret is None:
        return True
    if secret is not None and secret_header_ok(headers, header=secret_header, secret=secret):
        return True
    return hmac_secret is not None and hmac_ok(headers, raw, secret=hmac_secret, now=now, scheme=scheme)
