"""What a rule does: a control message for the call's controlUrl, in the shapes Vapi documents.

msgspec Structs give precise errors (``Expected `bool`, got `str` - at `$.endCallAfterSpoken```); the
engine sends ``msgspec.to_builtins(action)`` after rendering its templates.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=5000)]


class SayAction(msgspec.Struct, tag="say", tag_field="type", rename="camel", forbid_unknown_fields=True):
    """Speak ``content``; the three flags are always sent, with the API's defaults."""

    content: Text
    end_call_after_spoken: bool = False
    interrupt_assistant_enabled: bool = False
    interruptions_enabled: bool = True


class ConversationMessage(msgspec.Struct, forbid_unknown_fields=True):
    role: Literal["system", "user", "assistant", "tool", "function", "developer"]
    content: Text


class AddMessageAction(
    msgspec.Struct, tag="add-message", tag_field="type", rename="camel", forbid_unknown_fields=True, omit_defaults=True
):
    message: ConversationMessage
    trigger_response_enabled: bool = True


class ControlAction(msgspec.Struct, tag="control", tag_field="type", forbid_unknown_fields=True):
    control: Literal["mute-assistant", "unmute-assistant", "mute-customer", "unmute-customer", "say-first-message"]


class EndCallAction(msgspec.Struct, tag="end-call", tag_field="type", forbid_unknown_fields=True):
    pass


class NumberDestination(
    msgspec.Struct, tag="number", tag_field="type", rename="camel", forbid_unknown_fields=True, omit_defaults=True
):
    number: Text
    extension: str | None = None
    caller_id: str | None = None


class SipDestination(
    msgspec.Struct, tag="sip", tag_field="type", rename="camel", forbid_unknown_fields=True, omit_defaults=True
):
    sip_uri: Text
    sip_headers: dict[str, str] | None = None


class TransferAction(
    msgspec.Struct, tag="transfer", tag_field="type", rename="camel", forbid_unknown_fields=True, omit_defaults=True
):
    destination: NumberDestination | SipDestination
    content: str | None = None


class AppendContextAction(msgspec.Struct, tag="append-context", tag_field="type", forbid_unknown_fields=True):
    kind: Literal["commentary", "thinking", "instructions"]
    content: Text


Action = SayAction | AddMessageAction | ControlAction | EndCallAction | TransferAction | AppendContextAction
ACTION_TYPES = ("say", "add-message", "control", "end-call", "transfer", "append-context")

_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `(?P<name>[^`]+)`")


def parse_action(value: object) -> Action:
    """Convert a plain mapping to an :data:`Action`; ``ValueError(field, reason)`` on failure."""
    try:
        action: Action = msgspec.convert(value, Action)
        return action
    except msgspec.ValidationError as exc:
        field, reason = split_validation_error(str(exc))
        raise ActionError(field, reason) from None


class ActionError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def split_validation_error(message: str) -> tuple[str, str]:
    """``("destination.number", "Expected `str`, got `int`")`` from msgspec's one-line message."""
    match = _AT.match(message)
    assert match is not None  # the pattern matches any string
    reason, path = match["reason"], match["path"] or ""
    parts = [part for part in re.split(r"\.|\[|\]", path) if part]
    named = _NAMED_FIELD.search(reason)
    if named:
        parts.append(named["name"])
    if reason.startswith("Invalid value") and not parts:
        parts.append("type")
    if "tag" in reason.lower() and not parts:
        parts.append("type")
    return ".".join(parts), reason
