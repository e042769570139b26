"""Facts about Vapi's server messages that both Switchboard and its simulator rely on."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Vapi's default ``serverMessages`` subscription when a server URL sets none (no ``transcript``).
DEFAULT_SERVER_MESSAGES = (
    "conversation-update",
    "end-of-call-report",
    "function-call",
    "hang",
    "speech-update",
    "status-update",
    "tool-calls",
    "transfer-destination-request",
    "handoff-destination-request",
    "user-interrupted",
    "assistant.started",
)
# What Switchboard subscribes a call it places to when the caller names no ``serverMessages``: Vapi's
# defaults without ``conversation-update``, which repeats the whole conversation so far on every turn
# (the transcripts and the end-of-call report carry the same, once). Callers who want it list it.
SWITCHBOARD_SERVER_MESSAGES = tuple(message for message in DEFAULT_SERVER_MESSAGES if message != "conversation-update")
# The subscription entry for final transcripts only.
FINAL_TRANSCRIPTS = 'transcript[transcriptType="final"]'
# Every server message type Vapi documents (vapi-server-sdk 3.0's ServerMessage union, plus the legacy
# ``function-call``): the Prometheus label of webhooks by type takes these, anything else is "other",
# so an unknown (or hostile) type cannot create metric series without bound.
KNOWN_MESSAGE_TYPES = frozenset(
    {
        "assistant-request",
        "assistant.speechStarted",
        "assistant.started",
        "call.artifact.upload",
        "call.delete.failed",
        "call.deleted",
        "call.endpointing.request",
        "campaign.predial",
        "chat.created",
        "chat.deleted",
        "conversation-update",
        "end-of-call-report",
        "function-call",
        "handoff-destination-request",
        "hang",
        "knowledge-base-request",
        "language-change-detected",
        "model-output",
        "phone-call-control",
        "session.created",
        "session.deleted",
        "session.updated",
        "speech-update",
        "status-update",
        "tool-calls",
        "transcript",
        'transcript[transcriptType="final"]',
        "transfer-destination-request",
        "transfer-update",
        "user-interrupted",
        "voice-input",
        "voice-request",
    }
)

# Messages Vapi waits on for an answer (vapi-server-sdk 3.0.0: the ``ServerMessageResponse*`` models of
# ``ServerMessageResponseMessageResponse``, plus ``function-call``, the legacy form of ``tool-calls``).
# Every other type is a notification that any 2xx acknowledges.
REQUEST_TYPES = frozenset(
    {
        "assistant-request",
        "tool-calls",
        "function-call",
        "transfer-destination-request",
        "handoff-destination-request",
        "knowledge-base-request",
        "voice-request",
        "campaign.predial",
        "call.endpointing.request",
    }
)


def base_type(kind: str) -> str:
    """``transcript[transcriptType="final"]`` → ``transcript``: the type without its qualifier."""
    return kind.partition("[")[0]


def _qualifiers(entry: str) -> dict[str, str]:
    """``transcript[transcriptType="final"]`` → ``{"transcriptType": "final"}``."""
    inside = entry.partition("[")[2].rstrip("]")
    found: dict[str, str] = {}
    for part in inside.split(","):
        name, _, value = part.partition("=")
        if name.strip():
            found[name.strip()] = value.strip().strip("\"'")
    return found


def subscribed(subscription: Iterable[str], message: Mapping[str, Any]) -> bool:
    """Whether a ``serverMessages`` list asks for ``message`` (its qualifiers, like
    ``transcript[transcriptType="final"]``, are matched against the message's fields)."""
    kind = base_type(str(message.get("type", "")))
    for entry in subscription:
        if base_type(entry) != kind:
            continue
        if all(str(message.get(name)) == value for name, value in _qualifiers(entry).items()):
            return True
    return False


def error_answer(message: Mapping[str, Any], error: str) -> dict[str, Any]:
    """An answer to a request message that carries ``error`` in the message's own answer shape, so
    that Vapi (and the model) hear why instead of a silent acknowledgement."""
    if base_type(str(message.get("type", ""))) != "tool-calls":
        return {"error": error}
    results = []
    for call in _tool_calls(message):
        function = call.get("function")
        function = function if isinstance(function, Mapping) else {}
        # ToolCallResult (vapi-server-sdk 3.0.0) requires ``name`` besides ``toolCallId``.
        results.append({"name": str(function.get("name", "")), "toolCallId": call.get("id"), "error": error})
    return {"results": results}


def _tool_calls(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The tool calls of a ``tool-calls`` message: ``toolCallList``, else the ``toolCall`` of each
    ``toolWithToolCallList`` item (ServerMessageToolCalls)."""
    listed = message.get("toolCallList")
    if isinstance(listed, list) and listed:
        return [item for item in listed if isinstance(item, Mapping)]
    pairs = message.get("toolWithToolCallList")
    if isinstance(pairs, list):
        return [
            item["toolCall"]
            for item in pairs
            if isinstance(item, Mapping) and isinstance(item.get("toolCall"), Mapping)
        ]
    return []


def metric_type(kind: str) -> str:
    """The ``type`` label of a server message: its type when Vapi documents it, else ``other``."""
    return kind if kind in KNOWN_MESSAGE_TYPES else "other"
