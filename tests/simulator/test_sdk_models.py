"""Everything the simulator sends, and every control message Switchboard sends, validates against the
official vapi-server-sdk models.

The SDK models are Fern-generated pydantic models that accept extra fields and make enums open
(``Union[Literal[...], Any]``), so validation alone would accept misspelt keys and unknown values. The tests
therefore also check that no unexpected extra keys appear and that enum values are among the SDK's literals.
Each message is validated against its own model, not the ``ServerMessage`` envelope: the envelope's union of
every server message type costs ~15 s more to build, for no extra check.
"""

from __future__ import annotations

import asyncio
import dataclasses
import typing
from types import SimpleNamespace
from typing import Any

import httpx
import msgspec
import pydantic
import pytest

from service.simulator import SimulatorServer, Utterance
from service.simulator.control import validate_control
from service.simulator.lifecycle import END_CALL_REASON, SAY_THEN_END_REASON, TRANSFER_REASON
from service.vapi.control import (
    CONTROL_TYPES,
    AddMessage,
    AppendContext,
    ContextKind,
    Control,
    ControlAction,
    ControlError,
    ControlMessage,
    ConversationMessage,
    EndCall,
    NumberDestination,
    Role,
    Say,
    SendTransportMessage,
    SipDestination,
    SipTransportMessage,
    Transfer,
    TransferMode,
    TransferPlan,
    TwilioTransportMessage,
    parse_control,
)
from tests.simulator.conftest import ALL_MESSAGES, LONG_SCRIPT, WebhookReceiver, place_call, with_overrides

# Fields Vapi has sent in end-of-call reports for a long time that the SDK model no longer lists.
LEGACY_REPORT_FIELDS = {"durationSeconds", "durationMs", "durationMinutes", "summary", "transcript", "messages"}


@pytest.fixture(scope="session")
def sdk() -> SimpleNamespace:
    """The SDK models, imported once per session (the models that reference Call take seconds to build)."""
    from vapi import types as vapi_types

    names = [
        "Call",
        "CallStatus",
        "CallEndedReason",
        "ServerMessageStatusUpdate",
        "ServerMessageSpeechUpdate",
        "ServerMessageTranscript",
        "ServerMessageConversationUpdate",
        "ServerMessageEndOfCallReport",
        "ServerMessageHang",
        "ServerMessageModelOutput",
        "ServerMessageAssistantSpeech",
        "ServerMessageTransferUpdate",
        "ServerMessageUserInterrupted",
        "ClientInboundMessageSay",
        "ClientInboundMessageAddMessage",
        "ClientInboundMessageControl",
        "ClientInboundMessageEndCall",
        "ClientInboundMessageTransfer",
        "ClientInboundMessageAppendContext",
        "ClientInboundMessageSendTransportMessage",
        "ClientInboundMessageMessage",
        "ClientInboundMessageControlControl",
        "ClientInboundMessageAppendContextKind",
        "TransferPlanMode",
        "VapiSipTransportMessageSipVerb",
        "OpenAiMessageRole",
        "AssistantOverridesServerMessagesItem",
        "ServerMessageToolCalls",
        "ServerMessageAssistantRequest",
        "ServerMessageResponseToolCalls",
        "ServerMessageResponseAssistantRequest",
        "Assistant",
    ]
    namespace = SimpleNamespace(**{name: getattr(vapi_types, name) for name in names})
    namespace.control_union = pydantic.TypeAdapter(vapi_types.ClientInboundMessageMessage)
    namespace.control_members = typing.get_args(typing.get_args(vapi_types.ClientInboundMessageMessage)[0])
    return namespace


def _literals(alias: Any) -> set[str]:
    """The literal values of a Fern open enum ``Union[Literal[...], Any]``."""
    values: set[str] = set()
    for arg in typing.get_args(alias):
        if typing.get_origin(arg) is typing.Literal:
            values.update(typing.get_args(arg))
    return values


def _extras(model: Any) -> set[str]:
    return set(model.model_extra or {})


def _check_call(sdk: SimpleNamespace, payload: dict[str, Any]) -> Any:
    call = sdk.Call.model_validate(payload)
    assert _extras(call) == set(), _extras(call)
    assert call.status in _literals(sdk.CallStatus)
    if call.ended_reason is not None:
        assert call.ended_reason in _literals(sdk.CallEndedReason)
    assert call.monitor is not None
    assert _extras(call.monitor) == set()
    assert call.monitor.listen_url == payload["monitor"]["listenUrl"]
    assert call.monitor.control_url == payload["monitor"]["controlUrl"]
    assert call.created_at.tzinfo is not None
    return call


def _check_figures(parsed: Any, payload: dict[str, Any]) -> None:
    """The figures of a finished call (Call or ServerMessageEndOfCallReport, which Switchboard keeps on
    the call record): every cost item a known SDK cost model without unknown keys, adding up to ``cost``;
    the analysis and the structured outputs as the SDK's Analysis and Artifact name them."""
    assert parsed.costs, "no costs"
    assert {type(item).__name__.rpartition("_")[2] for item in parsed.costs} == {
        "Transport",
        "Transcriber",
        "Model",
        "Voice",
        "Vapi",
    }
    for item in parsed.costs:
        _no_extras(item)
    assert sum(item.cost for item in parsed.costs) == pytest.approx(parsed.cost, abs=1e-6)
    assert parsed.analysis.summary
    assert parsed.analysis.structured_data is not None
    assert parsed.analysis.success_evaluation in ("true", "false")
    _no_extras(parsed.analysis)
    assert parsed.artifact.structured_outputs == payload["artifact"]["structuredOutputs"]
    assert all(set(output) == {"name", "result"} for output in parsed.artifact.structured_outputs.values())


MODEL_FOR_TYPE = {
    "status-update": "ServerMessageStatusUpdate",
    "speech-update": "ServerMessageSpeechUpdate",
    "transcript": "ServerMessageTranscript",
    "conversation-update": "ServerMessageConversationUpdate",
    "end-of-call-report": "ServerMessageEndOfCallReport",
    "hang": "ServerMessageHang",
    "model-output": "ServerMessageModelOutput",
    "assistant.speechStarted": "ServerMessageAssistantSpeech",
    "transfer-update": "ServerMessageTransferUpdate",
    "user-interrupted": "ServerMessageUserInterrupted",
}


async def test_server_messages_and_calls_validate(
    sdk: SimpleNamespace, simulator: SimulatorServer, vapi: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    assert set(ALL_MESSAGES) <= _literals(sdk.AssistantOverridesServerMessagesItem)
    sim = simulator.sim
    # The customer cuts the assistant's first sentence short: user-interrupted.
    turns = (
        Utterance("assistant", "Hello, this is a long greeting that goes on.", at=0.1, duration=2.0),
        Utterance("user", "Wait.", at=1.0),
    )
    sim.script = dataclasses.replace(LONG_SCRIPT, hang_at=0.5, send_queued_status=True, barge_in=True, turns=turns)
    created = await place_call(vapi, with_overrides(serverMessages=ALL_MESSAGES))
    _check_call(sdk, created)
    await sim.wait_for_status(created["id"], "in-progress")
    control = created["monitor"]["controlUrl"]
    await vapi.post(control, json={"type": "say", "content": "Let me check that.", "interruptAssistantEnabled": True})
    await vapi.post(control, json={"type": "add-message", "message": {"role": "user", "content": "Hurry."}})
    await vapi.post(control, json={"type": "transfer", "destination": {"type": "number", "number": "+15550001111"}})
    await sim.wait_idle(created["id"])
    fetched = (await vapi.get(f"/call/{created['id']}")).json()
    parsed_call = _check_call(sdk, fetched)
    assert parsed_call.ended_reason == TRANSFER_REASON
    assert parsed_call.artifact is not None
    assert parsed_call.artifact.transcript
    _check_figures(parsed_call, fetched)

    seen: set[str] = set()
    for item in receiver.received:
        assert set(item.body) == {"message"}
        payload = item.body["message"]
        message = getattr(sdk, MODEL_FOR_TYPE[payload["type"]]).model_validate(payload)
        seen.add(payload["type"])
        allowed = LEGACY_REPORT_FIELDS if payload["type"] == "end-of-call-report" else set()
        assert _extras(message) <= allowed, (payload["type"], _extras(message))
        assert message.type == payload["type"]
        assert message.call is not None
        assert message.call.id == created["id"]
        assert message.call.monitor.listen_url == created["monitor"]["listenUrl"]
        assert message.timestamp is not None
        assert message.phone_number is not None
        if payload["type"] == "status-update":
            assert message.status in _literals(sdk.CallStatus)
        if payload["type"] == "end-of-call-report":
            assert message.ended_reason in _literals(sdk.CallEndedReason)
            assert message.artifact.messages
            assert message.analysis.summary
            assert message.started_at is not None
            assert message.ended_at is not None
            _check_figures(message, payload)
        if payload["type"] in ("conversation-update", "end-of-call-report"):
            messages = message.messages if payload["type"] == "conversation-update" else message.artifact.messages
            assert all(type(m).__name__ in ("UserMessage", "BotMessage", "SystemMessage") for m in messages)
            assert all(_extras(m) <= {"source"} for m in messages)
    assert seen == set(MODEL_FOR_TYPE)


@pytest.mark.parametrize(
    ("reason", "control"),
    [
        (END_CALL_REASON, {"type": "end-call"}),
        (SAY_THEN_END_REASON, {"type": "say", "content": "Goodbye.", "endCallAfterSpoken": True}),
    ],
)
async def test_ended_reasons_are_sdk_values(
    sdk: SimpleNamespace, simulator: SimulatorServer, vapi: httpx.AsyncClient, reason: str, control: dict[str, Any]
) -> None:
    assert reason in _literals(sdk.CallEndedReason)
    simulator.sim.script = LONG_SCRIPT
    call = await place_call(vapi)
    await simulator.sim.wait_for_status(call["id"], "in-progress")
    await vapi.post(call["monitor"]["controlUrl"], json=control)
    ended = await asyncio.wait_for(simulator.sim.wait_for_status(call["id"], "ended"), 5)
    assert ended.ended_reason == reason
    _check_call(sdk, ended.to_vapi())


# The most each control message can say (every optional field set), by type: what Switchboard sends.
CONTROL_MESSAGES: dict[str, ControlMessage] = {
    "say": Say(content="Hi", end_call_after_spoken=True, interrupt_assistant_enabled=True, interruptions_enabled=False),
    "add-message": AddMessage(ConversationMessage(role="system", content="x"), trigger_response_enabled=False),
    "control": Control(control="mute-assistant"),
    "end-call": EndCall(),
    "transfer": Transfer(
        destination=NumberDestination(
            number="+15550001111",
            extension="12",
            caller_id="+15550002222",
            message="Connecting you to billing.",
            transfer_plan=TransferPlan(
                mode="warm-transfer-wait-for-operator-to-speak-first-and-then-say-message",
                message="A customer about a refund.",
                timeout=30,
                sip_verb={"type": "refer"},
                dial_timeout=40,
                hold_audio_url="https://example.com/hold.mp3",
                transfer_complete_audio_url="https://example.com/beep.wav",
                twiml="<Say>Hello</Say>",
                sip_headers_in_refer_to_enabled=True,
            ),
            description="Billing desk",
        ),
        content="Hold on",
    ),
    "append-context": AppendContext(kind="instructions", content="x"),
    "send-transport-message": SendTransportMessage(TwilioTransportMessage(twiml="<Response><Pause/></Response>")),
}
SIP_TRANSFER = Transfer(
    destination=SipDestination(
        sip_uri="sip:agent@example.com",
        sip_headers={"X-Team": "a"},
        caller_id="sip:bot@example.com",
        message="Transferring.",
        transfer_plan=TransferPlan(mode="blind-transfer-add-summary-to-sip-header"),
        description="Agents",
    )
)
SIP_TRANSPORT = SendTransportMessage(SipTransportMessage(sip_verb="INFO", headers={"X-A": "1"}, body="dtmf=1"))
SDK_MODELS = {
    "say": "ClientInboundMessageSay",
    "add-message": "ClientInboundMessageAddMessage",
    "control": "ClientInboundMessageControl",
    "end-call": "ClientInboundMessageEndCall",
    "transfer": "ClientInboundMessageTransfer",
    "append-context": "ClientInboundMessageAppendContext",
    "send-transport-message": "ClientInboundMessageSendTransportMessage",
}


def _no_extras(model: Any) -> None:
    """No key of ``model`` or of a model inside it is unknown to the SDK (it would accept a misspelt one)."""
    assert _extras(model) == set(), (type(model).__name__, _extras(model))
    for value in dict(model).values():
        if isinstance(value, pydantic.BaseModel):
            _no_extras(value)


def test_every_control_type_has_an_example_and_an_sdk_model(sdk: SimpleNamespace) -> None:
    assert set(CONTROL_TYPES) == set(CONTROL_MESSAGES) == set(SDK_MODELS)
    sdk_types = {typing.get_args(member.model_fields["type"].annotation)[0] for member in sdk.control_members}
    assert set(CONTROL_TYPES) <= sdk_types


@pytest.mark.parametrize(
    "message", [*CONTROL_MESSAGES.values(), SIP_TRANSFER, SIP_TRANSPORT], ids=lambda m: type(m).__name__
)
def test_control_messages_are_sdk_messages(sdk: SimpleNamespace, message: ControlMessage) -> None:
    body = msgspec.to_builtins(message)
    fields = {key: value for key, value in body.items() if key != "type"}  # the type names the model
    _no_extras(getattr(sdk, SDK_MODELS[body["type"]]).model_validate(fields))
    parsed = sdk.control_union.validate_python(body)
    assert parsed.type == body["type"]
    _no_extras(parsed)
    assert msgspec.to_builtins(parse_control(body)) == body  # and our own schema reads it back
    if isinstance(message, AddMessage):
        assert message.message.role in _literals(sdk.OpenAiMessageRole)
    if isinstance(message, Control):
        assert message.control in _literals(sdk.ClientInboundMessageControlControl)
    if isinstance(message, AppendContext):
        assert message.kind in _literals(sdk.ClientInboundMessageAppendContextKind)
    if isinstance(message, Transfer) and message.destination.transfer_plan is not None:
        assert message.destination.transfer_plan.mode in _literals(sdk.TransferPlanMode)
    if isinstance(message, SendTransportMessage) and isinstance(message.message, SipTransportMessage):
        assert message.message.sip_verb in _literals(sdk.VapiSipTransportMessageSipVerb)


def test_every_role_control_and_kind_is_an_sdk_value(sdk: SimpleNamespace) -> None:
    assert set(typing.get_args(TransferMode)) == _literals(sdk.TransferPlanMode)
    assert set(typing.get_args(Role)) == _literals(sdk.OpenAiMessageRole)
    assert set(typing.get_args(ControlAction)) <= _literals(sdk.ClientInboundMessageControlControl)
    assert set(typing.get_args(ContextKind)) <= _literals(sdk.ClientInboundMessageAppendContextKind)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "say", "content": "Hi", "endCallAfterSpoken": False},
        {"type": "say", "message": "Hi"},  # the text where older docs put it
        {"type": "add-message", "message": {"role": "system", "content": "x"}},
        {"type": "control", "control": "mute-assistant"},
        {"type": "end-call"},
        {"type": "transfer", "destination": {"type": "number", "number": "+15550001111"}, "content": "Hold on"},
        {"type": "append-context", "kind": "instructions", "content": "x"},
        {"type": "send-transport-message", "message": {"transport": "twilio", "twiml": "<Response/>"}},
    ],
)
def test_control_messages_the_simulator_accepts_are_sdk_messages(sdk: SimpleNamespace, message: dict[str, Any]) -> None:
    assert validate_control(message) == []
    parsed = sdk.control_union.validate_python(message)
    assert parsed.type == message["type"]


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"type": "say", "content": "   "}, "content"),
        ({"type": "say", "content": "x" * 5001}, "content"),
        ({"type": "say", "content": "x", "interruptionEnabled": True}, "interruptionEnabled"),
        ({"type": "add-message", "message": {"role": "developer", "content": "x"}}, "message.role"),
        ({"type": "add-message", "message": {"role": "user", "content": "x" * 20001}}, "message.content"),
        ({"type": "transfer", "destination": {"type": "number", "number": "5550001111"}}, "destination.number"),
        ({"type": "transfer", "destination": {"type": "sip", "sipUri": "agent@example.com"}}, "destination.sipUri"),
        ({"type": "transfer", "destination": {"type": "number", "number": "+15550001111"}, "content": ""}, "content"),
        ({"type": "append-context", "kind": "gossip", "content": "x"}, "kind"),
        ({"type": "dance"}, "type"),
        (
            {
                "type": "transfer",
                "destination": {"type": "number", "number": "+15550001111", "transferPlan": {"mode": "teleport"}},
            },
            "destination.transferPlan.mode",
        ),
        (
            {"type": "transfer", "destination": {"type": "number", "number": "+15550001111", "extension": "ext 1"}},
            "destination.extension",
        ),
        ({"type": "send-transport-message", "message": {"transport": "pigeon"}}, "message.transport"),
        ({"type": "send-transport-message", "message": {"transport": "vapi.sip", "sipVerb": "BYE"}}, "message.sipVerb"),
    ],
)
def test_control_messages_are_stricter_than_the_sdk(message: dict[str, Any], field: str) -> None:
    """What the SDK's open models would let through, the one schema refuses, naming the field."""
    with pytest.raises(ControlError) as refused:
        parse_control(message)
    assert refused.value.field == field


async def test_request_messages_and_their_answers_validate(
    sdk: SimpleNamespace, simulator: SimulatorServer, vapi: httpx.AsyncClient, receiver: WebhookReceiver
) -> None:
    """What the tap relays and answers: a tool call and an inbound assistant-request as the simulator
    sends them, the error answers Switchboard gives without an upstream, and a stored assistant."""
    from service.vapi.messages import error_answer

    sim = simulator.sim
    created = await place_call(vapi, with_overrides(serverMessages=["tool-calls", "status-update"]))
    await sim.wait_for_status(created["id"], "in-progress")
    tool_call = {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": 1}'}}
    entry = await sim.request(created["id"], "tool-calls", toolCallList=[tool_call])
    assert entry is not None
    message = sdk.ServerMessageToolCalls.model_validate(entry["body"]["message"])
    assert message.tool_call_list[0].id == "call_1"
    answer = sdk.ServerMessageResponseToolCalls.model_validate(error_answer(entry["body"]["message"], "down"))
    assert answer.results is not None
    assert answer.results[0].tool_call_id == "call_1"
    assert answer.results[0].error == "down"
    sim.end_call(created["id"])

    call, asked = await sim.inbound_call("pn-1", {"number": "+14155550100"})
    assert call is None, "the receiver answered no assistant"
    request = sdk.ServerMessageAssistantRequest.model_validate(asked["body"]["message"])
    assert request.call is not None
    assert request.call.type == "inboundPhoneCall"
    sdk.ServerMessageResponseAssistantRequest.model_validate(error_answer(asked["body"]["message"], "no upstream"))

    sim.assistants["asst-1"] = {"name": "Support", "server": {"url": "https://crm.example.com/vapi"}}
    stored = (await vapi.get("/assistant/asst-1")).json()
    assert sdk.Assistant.model_validate(stored).server.url == "https://crm.example.com/vapi"
    assert (await vapi.get("/assistant/nope")).status_code == 404
