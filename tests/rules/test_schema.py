"""Rule documents → compiled rules (pure): every field, every error, durations, the compiled form."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vapi.types.client_inbound_message_say import ClientInboundMessageSay

from service.rules.schema import MILESTONES, CompiledRule, RuleSetError, compile_rule, compile_rules, parse_duration


def compiled(**document: Any) -> CompiledRule:
    result = compile_rule(document)
    assert isinstance(result, CompiledRule), result
    return result


def errors(**document: Any) -> list[tuple[str, str]]:
    result = compile_rule(document)
    assert isinstance(result, RuleSetError)
    return [(error.field, error.reason) for error in result.errors]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (0, 0.0),
        (2, 2.0),
        (1.5, 1.5),
        ("500ms", 0.5),
        ("0.5s", 0.5),
        ("90s", 90.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("3", 3.0),
        (" 7 s ", 7.0),
        (".25s", 0.25),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (-1, "must not be negative"),
        ("-2s", "must not be negative"),
        ("2 days", "is not a duration"),
        (True, "expected a number"),
        (None, "expected a number"),
        ("25h", "must not exceed 24 hours"),
        (float("nan"), "finite"),
        ("", "is not a duration"),
    ],
)
def test_bad_durations(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_duration(value)


@given(st.floats(min_value=0, max_value=86_400, allow_nan=False), st.sampled_from(["", "s", "ms", "m"]))
def test_durations_round_trip_any_unit(value: float, unit: str) -> None:
    scale = {"": 1, "s": 1, "ms": 0.001, "m": 60}[unit]
    text = f"{value!r}{unit}"
    if "e" in text or value * scale > 86_400:  # exponent notation is not a duration; over 24 h is refused
        with pytest.raises(ValueError, match=r"is not a duration|24 hours"):
            parse_duration(text)
        return
    assert parse_duration(text) == pytest.approx(value * scale, abs=1e-6)


def test_the_contract_examples_compile() -> None:
    rules, problems = compile_rules(
        [
            {
                "name": "recording-disclosure",
                "on": "call.answered",
                "delay": "1s",
                "if": 'call.metadata.region == "CA"',
                "say": "This call is recorded for quality.",
            },
            {
                "name": "two-minute-mark",
                "on": "call.elapsed",
                "at": "120s",
                "say": "Thanks for your patience, {{ call.customer.name }}.",
            },
            {
                "name": "cancel-intent",
                "on": "transcript",
                "if": 'event.role == "user" && event.transcript.matches("(?i)\\\\bcancel")',
                "action": {
                    "type": "say",
                    "content": "Before you go, may I offer you a discount?",
                    "interruptAssistantEnabled": True,
                },
                "once": True,
            },
        ]
    )
    assert problems == []
    disclosure, mark, cancel = (rule.compiled_form() for rule in rules)
    assert disclosure["delaySeconds"] == 1.0
    assert disclosure["if"] == 'call.metadata.region == "CA"'
    assert mark["atSeconds"] == 120.0
    assert mark["templateFields"] == ["call.customer.name"]
    assert cancel["action"] == {
        "type": "say",
        "content": "Before you go, may I offer you a discount?",
        "endCallAfterSpoken": False,
        "interruptAssistantEnabled": True,
        "interruptionsEnabled": True,
    }


def test_every_say_body_validates_against_the_sdk_model() -> None:
    rule = compiled(
        name="x", on="transcript", action={"content": "Hi {{ call.customer.name }}", "endCallAfterSpoken": True}
    )
    body, missing = rule.render({"customer": {"name": "Ada"}}, {})
    assert missing == []
    assert body["content"] == "Hi Ada"
    ClientInboundMessageSay.model_validate(body)
    plain = compiled(name="y", on="call.answered", say="Plain.")
    ClientInboundMessageSay.model_validate(plain.render({}, {})[0])


def test_other_control_messages_and_their_templates() -> None:
    transfer = compiled(
        name="t",
        on="transcript",
        action={
            "type": "transfer",
            "destination": {"type": "number", "number": "{{ call.metadata.agent }}"},
            "content": "Transferring you.",
        },
    )
    body, _ = transfer.render({"metadata": {"agent": "+14155550100"}}, {})
    # The number is checked when rendered; until then the rule shows the template as written.
    assert transfer.compiled_form()["action"]["destination"]["number"] == "{{ call.metadata.agent }}"
    assert body == {
        "type": "transfer",
        "destination": {"type": "number", "number": "+14155550100"},
        "content": "Transferring you.",
    }
    assert compiled(name="e", on="call.ended", action={"type": "end-call"}).render({}, {})[0] == {"type": "end-call"}
    notify = compiled(
        name="n",
        on="call.analyzed",
        action={"type": "notify", "message": "{{ event.longestSilenceSeconds }} s of dead air on {{ call.id }}"},
    )
    assert notify.render({"id": "c1"}, {"longestSilenceSeconds": 21.5})[0] == {
        "type": "notify",
        "message": "21.5 s of dead air on c1",
    }
    assert notify.compiled_form()["templateFields"] == ["call.id", "event.longestSilenceSeconds"]
    bare = compiled(name="b", on="transcript", action={"type": "notify"})  # on any milestone; message optional
    assert bare.render({}, {})[0] == {"type": "notify"}
    mute = compiled(name="m", on="speech.started", action={"type": "control", "control": "mute-assistant"})
    assert mute.render({}, {})[0] == {"type": "control", "control": "mute-assistant"}
    add = compiled(
        name="a",
        on="call.answered",
        action={"type": "add-message", "message": {"role": "system", "content": "Be brief."}},
    )
    assert add.render({}, {})[0]["message"] == {"role": "system", "content": "Be brief."}


def test_every_sdk_control_type_is_an_action() -> None:
    """Every control message of the one schema (each an SDK ClientInboundMessage, see
    tests/simulator/test_sdk_models.py) is a valid action and renders as written."""
    import msgspec

    from service.vapi.control import CONTROL_TYPES
    from tests.simulator.test_sdk_models import CONTROL_MESSAGES, SIP_TRANSFER, SIP_TRANSPORT

    examples = [msgspec.to_builtins(message) for message in (*CONTROL_MESSAGES.values(), SIP_TRANSFER, SIP_TRANSPORT)]
    assert {example["type"] for example in examples} == set(CONTROL_TYPES)
    for index, example in enumerate(examples):
        rule = compiled(name=f"r{index}", on="transcript", action=example)
        assert rule.render({}, {})[0] == example


def test_a_warm_transfer_with_templates() -> None:
    warm = compiled(
        name="w",
        on="transcript",
        action={
            "type": "transfer",
            "destination": {
                "type": "number",
                "number": "{{ call.metadata.agent }}",
                "extension": "{{ call.metadata.ext }}",
                "callerId": "{{ call.customer.number }}",
                "transferPlan": {"mode": "warm-transfer-say-message", "message": "{{ call.customer.name }} on hold."},
            },
        },
    )
    call = {"metadata": {"agent": "+14155550100", "ext": "42"}, "customer": {"number": "+14155550123", "name": "Ada"}}
    body, _ = warm.render(call, {})
    assert body["destination"] == {
        "type": "number",
        "number": "+14155550100",
        "extension": "42",
        "callerId": "+14155550123",
        "transferPlan": {"mode": "warm-transfer-say-message", "message": "Ada on hold."},
    }


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"on": "call.answered", "say": "x"}, [("name", "required: a unique name made of a-z, 0-9 and '-'")]),
        ({"name": "a", "say": "x"}, [("on", "required: the milestone, one of " + ", ".join(MILESTONES))]),
        (
            {"name": "a", "on": "call.answered"},
            [("say", "a rule needs something to do: say: TEXT or action: {type: …}")],
        ),
        (
            {"name": "a", "on": "call.elapsed", "say": "x"},
            [("at", "required with on: call.elapsed (seconds since the call was answered)")],
        ),
        (
            {"name": "a", "on": "call.answered", "at": 3, "say": "x"},
            [("at", "only allowed with on: call.elapsed (use delay for other milestones)")],
        ),
        (
            {"name": "a", "on": "user.silent", "say": "x"},
            [("for", "required with on: user.silent (how long the customer has been silent)")],
        ),
        ({"name": "a", "on": "user.silent", "for": 0, "say": "x"}, [("for", "must be greater than zero")]),
        ({"name": "a", "on": "transcript", "for": 2, "say": "x"}, [("for", "only allowed with on: user.silent")]),
        ({"name": "a", "on": "call.answered", "say": "x", "onn": 1}, [("onn", "unknown field (did you mean 'on'?)")]),
        (
            {"name": "a", "on": "call.answered", "say": "x", "once": "yes"},
            [("once", "expected true or false, got 'yes'")],
        ),
        (
            {"name": "a", "on": "call.answered", "if": 5, "say": "x"},
            [("if", "expected a CEL expression (a string), got int")],
        ),
        (
            {"name": "a", "on": "call.answered", "if": "calls.x == 1", "say": "x"},
            [("if", "invalid CEL: unknown variable 'calls': a condition sees only 'call' and 'event'")],
        ),
        ({"name": "a", "on": "call.answered", "say": ""}, [("say", "expected the text to speak (a non-empty string)")]),
        (
            {"name": "a", "on": "call.answered", "action": {"type": "shout"}},
            [
                (
                    "action.type",
                    "unknown action type 'shout'; known: say, add-message, control, end-call, transfer, "
                    "append-context, send-transport-message, notify",
                )
            ],
        ),
        (
            {"name": "a", "on": "call.answered", "action": {"type": "say", "content": "x", "endCallAfterSpoken": "no"}},
            [("action.endCallAfterSpoken", "Expected `bool`, got `str`")],
        ),
        (
            {"name": "a", "on": "call.answered", "action": {"type": "control", "control": "dance"}},
            [("action.control", "Invalid enum value 'dance'")],
        ),
        (
            {
                "name": "a",
                "on": "call.answered",
                "action": {"type": "transfer", "destination": {"type": "number", "number": "555-0100"}},
            },
            [("action.destination.number", "Expected `str` matching regex '^\\\\+[1-9][0-9]{6,14}$'")],
        ),
        (
            {
                "name": "a",
                "on": "call.answered",
                "action": {"type": "add-message", "message": {"role": "developer", "content": "x"}},
            },
            [("action.message.role", "Invalid enum value 'developer'")],
        ),
        (
            {
                "name": "a",
                "on": "call.answered",
                "action": {"type": "say", "content": "{% for x in call %}{% endfor %}"},
            },
            [("action.content", "For is not allowed: use {{ field }}, filters and if blocks")],
        ),
        (
            {"name": "a", "on": "call.ended", "action": {"type": "say", "content": "Bye"}},
            [("action", "a say cannot be heard on call.ended: the call is over (use action: {type: notify})")],
        ),
        (
            {"name": "a", "on": "call.analyzed", "say": "Bye"},
            [("say", "a say cannot be heard on call.analyzed: the call is over (use action: {type: notify})")],
        ),
        (
            {"name": "a", "on": "call.analyzed", "action": {"type": "end-call"}},
            [
                (
                    "action.type",
                    "a control message (end-call) cannot act on call.analyzed: the call is over; "
                    "only action: {type: notify} is allowed",
                )
            ],
        ),
        (
            {"name": "a", "on": "call.analyzed", "action": {"type": "notify", "message": " "}},
            [("action.message", "Expected `str` matching regex '\\\\S'")],
        ),
        (
            {"name": "a", "on": "call.analyzed", "action": {"type": "notify", "to": "boss"}},
            [("action.to", "Object contains unknown field `to`")],
        ),
        ("not a rule", [("", "a rule must be a mapping of fields, got str")]),
    ],
)
def test_each_problem_names_the_field_and_the_reason(document: Any, expected: list[tuple[str, str]]) -> None:
    result = compile_rule(document, index=2)
    assert isinstance(result, RuleSetError)
    assert [(error.field, error.reason) for error in result.errors] == expected
    assert {error.rule for error in result.errors} == {
        document.get("name", "#3") if isinstance(document, dict) else "#3"
    }


def test_all_problems_of_a_rule_are_reported_together() -> None:
    found = errors(name="Bad", on="nope", delay="-1s", say="{{ x }}")
    assert [field for field, _ in found] == ["name", "on", "delay", "say"]


def test_duplicate_names_are_reported_and_the_first_rule_kept() -> None:
    rules, problems = compile_rules(
        [{"name": "a", "on": "call.answered", "say": "1"}, {"name": "a", "on": "call.ringing", "say": "2"}]
    )
    assert [rule.milestone for rule in rules] == ["call.answered"]
    assert [str(problem) for problem in problems] == ["rule 'a', field 'name': duplicate name: rule #1 has it"]


def test_timed_rules() -> None:
    assert compiled(name="a", on="call.answered", delay=1, say="x").is_timed
    assert compiled(name="b", on="call.elapsed", at=5, say="x").is_timed
    assert compiled(name="c", on="user.silent", **{"for": "2s"}, say="x").is_timed
    assert not compiled(name="d", on="transcript", say="x").is_timed
