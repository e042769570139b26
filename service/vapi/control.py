"""Control messages for a call's ``controlUrl``: one set of msgspec Structs, in the shapes Vapi documents.

The API (``POST /v1/calls/{id}/say`` and ``/control``), the rules (``action:``) and the simulator (which
stands in for Vapi) all validate against these, so they cannot drift apart. Each Struct mirrors one of the
vapi-server-sdk's ``ClientInboundMessage*`` models (``tests/simulator/test_sdk_models.py`` checks it), with
stricter checks than the SDK's open models: known roles and controls only, E.164 numbers, bounded text.

To support another control message, add its Struct here (``tag=`` its ``type``) and add it to
:data:`ControlMessage`; :data:`CONTROL_TYPES` follows. Add it to :data:`ControlRequest` if the API's
``/control`` route should accept it too.
"""

from __future__ import annotations

import re
import typing
from typing import Annotated, Literal

import msgspec

# Spoken text (say, transfer): one utterance, not blank.
SpokenText = Annotated[str, msgspec.Meta(min_length=1, max_length=5000, pattern=r"\S")]
# Text the model reads (a conversation message, context): may be a long system prompt, not blank.
ModelText = Annotated[str, msgspec.Meta(min_length=1, max_length=20000, pattern=r"\S")]
E164 = Annotated[str, msgspec.Meta(pattern=r"^\+[1-9][0-9]{6,14}$", examples=["+14155550123"])]
SipUri = Annotated[str, msgspec.Meta(pattern=r"^sips?:", examples=["sip:agent@example.com"])]

Role = Literal["system", "user", "assistant", "tool", "function"]  # the SDK's OpenAiMessageRole values
ControlAction = Literal["mute-assistant", "unmute-assistant", "mute-customer", "unmute-customer", "say-first-message"]
ContextKind = Literal["commentary", "thinking", "instructions"]


class SayFields(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """A sentence for the assistant to speak now (the body of the API's say route, which has no ``type``).

    The three flags are always sent, with Vapi's defaults, so the journal shows what was asked.
    """

    content: SpokenText
    end_call_after_spoken: bool = False
    interrupt_assistant_enabled: bool = False
    interruptions_enabled: bool = True


class Say(SayFields, tag="say", tag_field="type"):
    """``say``: speak ``content`` now."""


class ConversationMessage(msgspec.Struct, forbid_unknown_fields=True):
    role: Role
    content: ModelText


class AddMessage(msgspec.Struct, tag="add-message", tag_field="type", rename="camel", forbid_unknown_fields=True):
    """``add-message``: add a message to the conversation; the assistant answers it unless told not to."""

    message: ConversationMessage
    trigger_response_enabled: bool = True


class Control(msgspec.Struct, tag="control", tag_field="type", forbid_unknown_fields=True):
    """``control``: mute or unmute a side, or make the assistant say its first message."""

    control: ControlAction


class EndCall(msgspec.Struct, tag="end-call", tag_field="type", forbid_unknown_fields=True):
    """``end-call``: end the call now."""


# How Vapi executes a transfer (the SDK's TransferPlanMode values).
TransferMode = Literal[
    "blind-transfer",
    "blind-transfer-add-summary-to-sip-header",
    "warm-transfer-say-message",
    "warm-transfer-say-summary",
    "warm-transfer-twiml",
    "warm-transfer-wait-for-operator-to-speak-first-and-then-say-message",
    "warm-transfer-wait-for-operator-to-speak-first-and-then-say-summary",
    "warm-transfer-experimental",
]
Extension = Annotated[str, msgspec.Meta(pattern=r"^[0-9*#,wW]{1,20}$", examples=["123"])]
CallerId = Annotated[str, msgspec.Meta(min_length=1, max_length=100, examples=["+14155550100", "{{customer.number}}"])]
AudioUrl = Annotated[str, msgspec.Meta(pattern=r"^https://", max_length=2048)]
Seconds = Annotated[float, msgspec.Meta(gt=0, le=600)]


class TransferPlan(msgspec.Struct, rename="camel", omit_defaults=True, forbid_unknown_fields=True):
    """``transferPlan`` (SDK ``TransferPlan``): a blind or warm transfer; ``message`` is said to the
    destination party in the warm modes that say one. The SDK's nested plans (summary, fallback,
    context engineering) are left out: Vapi's defaults apply."""

    mode: TransferMode = "blind-transfer"
    message: SpokenText | None = None
    timeout: Seconds | None = None
    sip_verb: dict[str, str] | None = None
    dial_timeout: Seconds | None = None
    hold_audio_url: AudioUrl | None = None
    transfer_complete_audio_url: AudioUrl | None = None
    twiml: ModelText | None = None
    sip_headers_in_refer_to_enabled: bool | None = None


class NumberDestination(
    msgspec.Struct, tag="number", tag_field="type", rename="camel", omit_defaults=True, forbid_unknown_fields=True
):
    """A phone number to transfer to (SDK ``TransferDestinationNumber``): ``message`` is said to the
    customer before the transfer, ``callerId`` is what the destination sees."""

    number: E164
    extension: Extension | None = None
    caller_id: CallerId | None = None
    message: SpokenText | None = None
    transfer_plan: TransferPlan | None = None
    description: ModelText | None = None


class SipDestination(
    msgspec.Struct, tag="sip", tag_field="type", rename="camel", omit_defaults=True, forbid_unknown_fields=True
):
    """A SIP URI to transfer to (SDK ``TransferDestinationSip``)."""

    sip_uri: SipUri
    sip_headers: dict[str, str] | None = None
    caller_id: CallerId | None = None
    message: SpokenText | None = None
    transfer_plan: TransferPlan | None = None
    description: ModelText | None = None


class Transfer(msgspec.Struct, tag="transfer", tag_field="type", omit_defaults=True, forbid_unknown_fields=True):
    """``transfer``: transfer the call; ``content`` is spoken first."""

    destination: NumberDestination | SipDestination
    content: SpokenText | None = None


class AppendContext(msgspec.Struct, tag="append-context", tag_field="type", forbid_unknown_fields=True):
    """``append-context``: context the model sees (commentary is spoken in its own words)."""

    kind: ContextKind
    content: ModelText


class TwilioTransportMessage(
    msgspec.Struct, tag="twilio", tag_field="transport", omit_defaults=True, forbid_unknown_fields=True
):
    """TwiML for the call's Twilio leg."""

    twiml: ModelText


class SipTransportMessage(
    msgspec.Struct,
    tag="vapi.sip",
    tag_field="transport",
    rename="camel",
    omit_defaults=True,
    forbid_unknown_fields=True,
):
    """A SIP request on the call's Vapi SIP leg (SDK ``VapiSipTransportMessageSipVerb``)."""

    sip_verb: Literal["INFO", "MESSAGE", "NOTIFY"]
    headers: dict[str, str] | None = None
    body: Annotated[str, msgspec.Meta(max_length=20000)] | None = None


class SendTransportMessage(msgspec.Struct, tag="send-transport-message", tag_field="type", forbid_unknown_fields=True):
    """``send-transport-message``: a message for the call's transport (Twilio TwiML, or a SIP request)."""

    message: TwilioTransportMessage | SipTransportMessage


ControlMessage = Say | AddMessage | Control | EndCall | Transfer | AppendContext | SendTransportMessage
"""Every control message Switchboard sends: what a rule's ``action`` may be."""

ControlRequest = AddMessage | Control | EndCall | Transfer | AppendContext | SendTransportMessage
"""What ``POST /v1/calls/{id}/control`` accepts (``say`` has its own route)."""

CONTROL_TYPES: tuple[str, ...] = tuple(str(member.__struct_config__.tag) for member in typing.get_args(ControlMessage))

_AT = re.compile(r"^(?P<reason>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_NAMED_FIELD = re.compile(r"(?:unknown|missing required) field `(?P<name>[^`]+)`")


class ControlError(ValueError):
    """A control message that does not validate: the dotted ``field`` (``destination.number``) and why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}" if field else reason)
        self.field = field
        self.reason = reason


def parse_control(value: object) -> ControlMessage:
    """A plain mapping (decoded JSON or YAML) as a :data:`ControlMessage`; :class:`ControlError` if invalid."""
    try:
        message: ControlMessage = msgspec.convert(value, ControlMessage)
    except msgspec.ValidationError as exc:
        raise ControlError(*split_validation_error(str(exc))) from None
    return message


def split_validation_error(message: str) -> tuple[str, str]:
    """``("destination.number", "Expected `str`, got `int`")`` from msgspec's one-line message."""
    match = _AT.match(message)
    assert match is not None  # the pattern matches any string
    reason, path = match["reason"], match["path"] or ""
    parts = [part for part in re.split(r"\.|\[|\]", path) if part]
    named = _NAMED_FIELD.search(reason)
    if named:
        parts.append(named["name"])
    # An unknown or missing tag is the ``type`` field's fault.
    if not parts and (reason.startswith("Invalid value") or "tag" in reason.lower()):
        parts.append("type")
    return ".".join(parts), reason
