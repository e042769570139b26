"""CEL conditions and say templates (pure): compile once, evaluate safely, fail soft at run time."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.rules.conditions import (
    MAX_SOURCE_CHARS,
    ConditionRuntimeError,
    ConditionSyntaxError,
    compile_condition,
    make_context,
)
from service.rules.templates import TemplateError, compile_template

CALL = {"id": "c1", "status": "in-progress", "customer": {"name": "Ada"}, "metadata": {"region": "CA", "tier": 2}}
EVENT = {"type": "transcript", "role": "user", "transcript": "I want to CANCEL", "turn": 3}


def holds(source: str, call: dict[str, Any] = CALL, event: dict[str, Any] = EVENT) -> bool:
    return compile_condition(source).evaluate(make_context(call, event))


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('call.metadata.region == "CA"', True),
        ('event.role == "user" && event.transcript.matches("(?i)\\\\bcancel")', True),
        ('event.transcript.contains("refund")', False),
        ("call.metadata.tier >= 2 && event.turn > 2", True),
        ('has(call.metadata.crmId) && call.metadata.crmId == "x"', False),
        ('call.customer.name in ["Ada", "Grace"]', True),
        ("[1, 2, 3].exists(n, n == event.turn)", True),
        ("size(event.transcript) > 5", True),
    ],
)
def test_conditions(source: str, expected: bool) -> None:
    assert holds(source) is expected


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("event.role ==", "Syntax error"),
        ("x == 1", "unknown variable 'x'"),
        ("", "empty"),
        ("true || " * 200 + "true", f"longer than {MAX_SOURCE_CHARS}"),
        ("[1].all(a, [1].all(b, [1].all(c, [1].all(d, true))))", "at most 3 comprehension macros"),
        ('event.transcript.matches("(")', "invalid regular expression '(': missing )"),
        ('event.transcript.matches(r"(a)\\1")', "invalid regular expression"),  # RE2: no backreferences
    ],
)
def test_bad_conditions_are_refused_at_load(source: str, reason: str) -> None:
    with pytest.raises(ConditionSyntaxError) as raised:
        compile_condition(source)
    assert reason in str(raised.value)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ('event.transcript.matches("CANCEL$")', True),  # anywhere in the text, like CEL's own matches()
        ('event.transcript.matches("^cancel")', False),
        ('matches(event.transcript, "(?i)want")', True),  # the global form too
        ("event.transcript.matches(call.customer.name)", False),  # a pattern computed at run time
        ("\"x.matches(\\\"y\\\")\" == event.transcript || event.transcript.matches(r'''I\\s+want''')", True),
        ("event.matches == 1 || true", True),  # a field named matches is not a call
    ],
)
def test_matches_keeps_cel_semantics_with_cached_patterns(source: str, expected: bool) -> None:
    assert holds(source, event={**EVENT, "matches": 1}) is expected


def test_functions_outside_cel_do_not_exist() -> None:
    condition = compile_condition('open("/etc/passwd") == ""')  # compiles: CEL resolves functions late
    with pytest.raises(ConditionRuntimeError, match="Undefined variable or function: 'open'"):
        condition.evaluate(make_context(CALL, EVENT))


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("event.missing == 1", "KeyError"),
        ("call.metadata.tier + 1", "not a boolean"),
        ('event.turn > "3"', "No such overload"),
        ('event.transcript.matches(call.customer.name + "(")', "matches.*invalid regular expression 'Ada\\('"),
    ],
)
def test_run_time_errors_raise_a_condition_error(source: str, reason: str) -> None:
    with pytest.raises(ConditionRuntimeError, match=reason):
        holds(source)


@given(st.text(max_size=60))
def test_any_text_either_compiles_or_is_refused_cleanly(source: str) -> None:
    try:
        condition = compile_condition(source)
    except ConditionSyntaxError:
        return
    with contextlib.suppress(ConditionRuntimeError):
        condition.evaluate(make_context(CALL, EVENT))


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(st.integers(), st.text(max_size=8)), max_size=5))
def test_metadata_of_any_shape_evaluates_or_fails_soft(metadata: dict[str, Any]) -> None:
    try:
        holds('call.metadata.region == "CA"', {**CALL, "metadata": metadata})
    except ConditionRuntimeError:
        assert "region" not in metadata or not isinstance(metadata["region"], str)


def test_templates_render_fields_and_missing_ones_render_empty() -> None:
    template = compile_template(
        "Hi {{ call.customer.name }}{{ call.customer.title }}, re {{ event.transcript | lower }}."
    )
    assert template.fields == ("call.customer.name", "call.customer.title", "event.transcript")
    text, missing = template.render(CALL, EVENT)
    assert text == "Hi Ada, re i want to cancel."
    assert missing == ["call.customer.title"]
    deep, missing = compile_template("[{{ call.nothing.deeper.still }}]").render(CALL, EVENT)
    assert (deep, missing) == ("[]", ["call.nothing.deeper.still"])
    conditional = compile_template("{% if call.customer.name %}Hi {{ call.customer.name }}{% else %}Hello{% endif %}")
    assert conditional.render(CALL, EVENT)[0] == "Hi Ada"
    assert conditional.render({"customer": {}}, EVENT)[0] == "Hello"
    assert compile_template("{{ call.customer['name'] | default('you') }}").render({}, {})[0] == "you"


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ call.customer.name ", "template syntax error at line 1"),
        ("{% for x in call %}{% endfor %}", "For is not allowed"),
        ("{{ 'a' * 1000000 }}", "Mul is not allowed"),
        ("{{ call.items() }}", "Call is not allowed"),
        ("{{ call.__class__.__mro__ }}", "names starting with '_' are private"),
        ("{{ range(10) }}", "Call is not allowed"),
        ("{{ secrets }}", "unknown variable 'secrets'"),
        ("{{ call | attr('x') }}", "filter 'attr' is not allowed"),
        ("{% set x = 1 %}", "Assign is not allowed"),
        ("x" * 5001, "longer than 5000"),
    ],
)
def test_unsafe_or_broken_templates_are_refused(source: str, reason: str) -> None:
    with pytest.raises(TemplateError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        compile_template(source)


@given(st.text(max_size=40))
def test_any_text_is_a_template_or_refused_cleanly(source: str) -> None:
    try:
        template = compile_template(source)
    except TemplateError:
        return
    text, _ = template.render(CALL, EVENT)
    assert isinstance(text, str)
