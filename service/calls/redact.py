"""Removing capabilities and secrets from Vapi payloads before they are stored or shown (pure)."""

from __future__ import annotations

from typing import Any

REDACTED = "[redacted]"
# Keys whose values are secrets wherever they appear in a Vapi payload (compared lower-case).
SECRET_KEYS = frozenset(
    {"listenurl", "controlurl", "secret", "token", "authorization", "password", "apikey", "x-vapi-secret"}
)
# Keys whose whole value (a dict of header name → value) is secret: server headers carry our secret.
SECRET_CONTAINERS = frozenset({"headers", "credentials"})


def redact(value: Any) -> Any:
    """A copy of ``value`` with monitor URLs, header values and other secrets replaced."""
    if isinstance(value, dict):
        result: dict[str, Any] = {}
        for key, item in value.items():
            lowered = str(key).lower()
            if lowered in SECRET_KEYS and item is not None:
                result[key] = REDACTED
            elif lowered in SECRET_CONTAINERS and isinstance(item, dict):
                result[key] = dict.fromkeys(item, REDACTED)
            else:
                result[key] = redact(item)
        return result
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value
