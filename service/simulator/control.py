"""Control-URL messages as the simulated Vapi accepts them: Switchboard's own schema, plus what Vapi tolerates.

The messages Switchboard sends are checked against ``service.vapi.control``, the one schema the API and
the rules use too. On top of it, like Vapi, the simulator accepts the SDK's ``{"message": {...}}``
envelope, a ``say`` whose text is in ``message`` (older docs), and control types it does not simulate.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.vapi.control import CONTROL_TYPES, ControlError, parse_control

# Accepted and logged without a schema of their own: nothing to simulate (and not yet sent by Switchboard).
UNSIMULATED_TYPES = frozenset({"handoff"})


def unwrap_control(body: object) -> object:
    """Accept the SDK's ``{"message": {"type": …}}`` envelope as well as the documented flat message."""
    if isinstance(body, Mapping) and "type" not in body and isinstance(body.get("message"), Mapping):
        return body["message"]
    return body


def say_content(message: Mapping[str, Any]) -> str | None:
    """The text of a ``say``: ``content``, or ``message`` as older docs send it."""
    for key in ("content", "message"):
        value = message.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def validate_control(message: object) -> list[str]:
    """Problems with a control message (empty when it is acceptable), as Vapi lists them in a 400."""
    if not isinstance(message, Mapping):
        return ["body must be a JSON object"]
    kind = message.get("type")
    known = {*CONTROL_TYPES, *UNSIMULATED_TYPES}
    if not isinstance(kind, str) or kind not in known:
        return [f"type must be one of: {', '.join(sorted(known))}"]
    if kind in UNSIMULATED_TYPES:
        return []
    if kind == "say" and "content" not in message and isinstance(message.get("message"), str):
        legacy = dict(message)
        legacy["content"] = legacy.pop("message")
        message = legacy
    try:
        parse_control(message)
    except ControlError as exc:
        return [str(exc)]
    return []
