"""Control-URL messages: validation (pure) in the shapes Vapi documents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CONTROL_TYPES = frozenset(
    {
        "say",
        "add-message",
        "control",
        "end-call",
        "transfer",
        "append-context",
        "send-transport-message",
        "handoff",
    }
)
CONTROL_ACTIONS = frozenset(
    {"mute-assistant", "unmute-assistant", "mute-customer", "unmute-customer", "say-first-message"}
)
MESSAGE_ROLES = frozenset({"system", "user", "assistant", "tool", "function", "developer"})
CONTEXT_KINDS = frozenset({"commentary", "thinking", "instructions"})


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
    """Problems with a control message (empty when it is acceptable)."""
    if not isinstance(message, Mapping):
        return ["body must be a JSON object"]
    kind = message.get("type")
    if kind not in CONTROL_TYPES:
        return [f"type must be one of: {', '.join(sorted(CONTROL_TYPES))}"]
    errors: list[str] = []
    for flag in (
        "endCallAfterSpoken",
        "interruptAssistantEnabled",
        "interruptionsEnabled",
        "triggerResponseEnabled",
    ):
        if flag in message and not isinstance(message[flag], bool):
            errors.append(f"{flag} must be a boolean value")
    if kind == "say" and say_content(message) is None:
        errors.append("content must be a non-empty string")
    elif kind == "add-message":
        inner = message.get("message")
        if not isinstance(inner, Mapping):
            errors.append("message must be an object")
        else:
            if inner.get("role") not in MESSAGE_ROLES:
                errors.append(f"message.role must be one of: {', '.join(sorted(MESSAGE_ROLES))}")
            if not isinstance(inner.get("content"), str):
                errors.append("message.content must be a string")
    elif kind == "control" and message.get("control") not in CONTROL_ACTIONS:
        errors.append(f"control must be one of: {', '.join(sorted(CONTROL_ACTIONS))}")
    elif kind == "transfer":
        errors.extend(_transfer_errors(message))
    elif kind == "append-context":
        if message.get("kind") not in CONTEXT_KINDS:
            errors.append(f"kind must be one of: {', '.join(sorted(CONTEXT_KINDS))}")
        if not isinstance(message.get("content"), str):
            errors.append("content must be a string")
    elif kind == "send-transport-message" and not isinstance(message.get("message"), Mapping):
        errors.append("message must be an object")
    return errors


def _transfer_errors(message: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    if "content" in message and not isinstance(message["content"], str):
        errors.append("content must be a string")
    destination = message.get("destination")
    if destination is None:
        return errors
    if not isinstance(destination, Mapping):
        return [*errors, "destination must be an object"]
    if destination.get("type") == "number":
        if not isinstance(destination.get("number"), str):
            errors.append("destination.number must be a string")
    elif destination.get("type") == "sip":
        if not isinstance(destination.get("sipUri"), str):
            errors.append("destination.sipUri must be a string")
    else:
        errors.append("destination.type must be one of: number, sip")
    return errors
