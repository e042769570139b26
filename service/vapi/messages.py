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
