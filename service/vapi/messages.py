"""Facts about Vapi's server messages that both Switchboard and its simulator rely on."""

from __future__ import annotations

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


def metric_type(kind: str) -> str:
    """The ``type`` label of a server message: its type when Vapi documents it, else ``other``."""
    return kind if kind in KNOWN_MESSAGE_TYPES else "other"
