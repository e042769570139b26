"""Pure parts of the simulator: request validation, delivery resolution, control validation, scripts."""

from __future__ import annotations

from typing import Any

import pytest

from service.simulator.app import apply_script_changes, script_to_json
from service.simulator.calls import DEFAULT_SERVER_MESSAGES, iso, resolve_delivery, validate_create_call
from service.simulator.control import say_content, unwrap_control, validate_control
from service.simulator.script import CallScript, Utterance, speech_seconds


def _body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"assistantId": "a", "phoneNumberId": "p", "customer": {"number": "+15551234567"}}
    body.update(changes)
    return body


def test_valid_create_call_body() -> None:
    assert validate_create_call(_body(), phone=True) == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"phoneNumberId": "p", "customer": {"number": "+15551234567"}}, "Need Either `assistant`"),
        (_body(customer={"name": "x"}), "customer.number"),
        (_body(customer={"number": "555-1234"}), "E.164"),
        ({"assistantId": "a", "customer": {"number": "+15551234567"}}, "phoneNumberId"),
        (_body(metadata={"a": 1}), "property metadata should not exist"),
        (_body(assistantOverrides=[1]), "assistantOverrides must be an object"),
    ],
)
def test_invalid_create_call_bodies(body: dict[str, Any], fragment: str) -> None:
    errors = validate_create_call(body, phone=True)
    assert any(fragment in error for error in errors), errors


def test_delivery_defaults_to_org_server_url_with_secret() -> None:
    delivery = resolve_delivery(_body(), server_url="http://h/hook", secret="s")
    assert delivery.url == "http://h/hook"
    assert delivery.headers == {"X-Vapi-Secret": "s"}
    assert delivery.subscription == DEFAULT_SERVER_MESSAGES
    assert not delivery.wants("transcript", transcript_type="final")


def test_delivery_prefers_the_assistant_override_server() -> None:
    overrides = {
        "server": {"url": "http://other/x", "headers": {"X-Token": "t"}, "timeoutSeconds": 3},
        "serverMessages": ['transcript[transcriptType="final"]', "status-update"],
    }
    delivery = resolve_delivery(_body(assistantOverrides=overrides), server_url="http://h/hook", secret="s")
    assert (delivery.url, delivery.headers, delivery.timeout) == ("http://other/x", {"X-Token": "t"}, 3.0)
    assert delivery.wants("transcript", transcript_type="final")
    assert not delivery.wants("transcript", transcript_type="partial")
    assert not delivery.wants("speech-update")


def test_empty_subscription_sends_nothing() -> None:
    delivery = resolve_delivery(_body(assistantOverrides={"serverMessages": []}), server_url="http://h", secret=None)
    assert not delivery.wants("status-update")
    assert delivery.headers == {}


@pytest.mark.parametrize(
    "message",
    [
        {"type": "say", "content": "hi"},
        {"type": "say", "message": "hi"},
        {"type": "say", "content": "bye", "endCallAfterSpoken": True, "interruptAssistantEnabled": True},
        {"type": "add-message", "message": {"role": "system", "content": "x"}, "triggerResponseEnabled": False},
        {"type": "control", "control": "mute-assistant"},
        {"type": "end-call"},
        {"type": "transfer", "destination": {"type": "number", "number": "+15550001111"}, "content": "One moment"},
        {"type": "transfer", "destination": {"type": "sip", "sipUri": "sip:a@b"}},
        {"type": "append-context", "kind": "instructions", "content": "be brief"},
        {"type": "send-transport-message", "message": {"transport": "twilio", "twiml": "<Response/>"}},
        {"type": "handoff"},
    ],
)
def test_valid_control_messages(message: dict[str, Any]) -> None:
    assert validate_control(message) == []


@pytest.mark.parametrize(
    "message",
    [
        {"type": "dance"},
        {"type": ["say"]},
        {"content": "no type"},
        {"type": "say"},
        {"type": "say", "content": "  "},
        {"type": "say", "content": "x", "endCallAfterSpoken": "yes"},
        {"type": "add-message", "message": {"role": "robot", "content": "x"}},
        {"type": "control", "control": "explode"},
        {"type": "transfer", "destination": {"type": "carrier-pigeon"}},
        {"type": "append-context", "kind": "gossip", "content": "x"},
        [1, 2],
    ],
)
def test_invalid_control_messages(message: Any) -> None:
    assert validate_control(message) != []


def test_control_envelope_and_legacy_say_text() -> None:
    unwrapped = unwrap_control({"message": {"type": "say", "message": "legacy"}})
    assert unwrapped == {"type": "say", "message": "legacy"}
    assert say_content({"type": "say", "content": "new", "message": "old"}) == "new"


def test_speech_length_follows_words() -> None:
    assert speech_seconds("one") == pytest.approx(0.4)
    assert speech_seconds("one two three four five") == pytest.approx(1.0)
    assert Utterance("user", "a b c", at=0).seconds == pytest.approx(0.6)
    assert Utterance("user", "a b c", at=0, duration=2).seconds == 2


def test_script_changes_from_json() -> None:
    script = apply_script_changes(
        CallScript(), {"talk_seconds": 3.0, "turns": [], "hang_at": None, "ended_reason": "silence-timed-out"}
    )
    assert script.talk_seconds == 3.0
    assert script.turns == ()
    assert script.ended_reason == "silence-timed-out"
    assert script_to_json(script)["talk_seconds"] == 3.0


def test_iso_timestamps_have_milliseconds_and_z() -> None:
    from datetime import UTC, datetime

    assert iso(datetime(2024, 9, 10, 11, 14, 12, 339123, tzinfo=UTC)) == "2024-09-10T11:14:12.339Z"
