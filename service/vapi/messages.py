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
# The subscription entry for final transcripts only.
FINAL_TRANSCRIPTS = 'transcript[transcriptType="final"]'
