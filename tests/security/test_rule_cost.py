"""Item 1: a rule cannot stall the service. The bombs are refused quickly while /healthz keeps answering."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from service.rules import conditions
from service.rules.conditions import ConditionRuntimeError, ConditionSyntaxError, compile_condition, make_context

A100 = "'" + "a" * 100 + "'"
# 456 characters that used to build 10^8 characters while compiling (Jinja folded the constants).
TEMPLATE_BOMB = "{{ " + A100 + "".join(f"|replace('a', {A100})" for _ in range(3)) + " }}"
FORTY = "[" + ", ".join(["0"] * 40) + "]"
# 40^4 = 2.56 million iterations, ~0.7 s per evaluation; the comment hid the macros from a regex.
CEL_BOMB = f"{FORTY}.all(a, {FORTY}.all(b, {FORTY}.all(c, {FORTY}.all(d, a == d))))"
CEL_BOMB_COMMENTED = CEL_BOMB.replace(".all(", ".all( // a macro\n")


def rule(**fields: Any) -> dict[str, Any]:
    return {"name": "bomb", "on": "transcript", "say": "hello", **fields}


async def _timed(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await client.request(method, path, **kwargs)
    return response, time.perf_counter() - started


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (rule(say=TEMPLATE_BOMB), "replace would build more than"),
        (rule(**{"if": CEL_BOMB}), "comprehension macros"),
        (rule(**{"if": CEL_BOMB_COMMENTED}), "comprehension macros"),
    ],
    ids=["template", "cel", "cel-with-comment"],
)
async def test_rule_bombs_are_refused_quickly_while_healthz_answers(
    api: httpx.AsyncClient, document: dict[str, Any], reason: str
) -> None:
    validate = asyncio.create_task(_timed(api, "POST", "/v1/rules/validate", json=document))
    create = asyncio.create_task(_timed(api, "POST", "/v1/rules", json=document))
    health, health_seconds = await _timed(api, "GET", "/healthz")
    (checked, checked_seconds), (created, created_seconds) = await validate, await create
    assert health.status_code == 200
    assert health_seconds < 0.1
    # validate reports problems in its body (contract: {valid, errors}); storing answers 422.
    assert checked.status_code == 200
    assert checked.json()["valid"] is False
    assert reason in checked.json()["errors"][0]["reason"], checked.json()
    assert checked_seconds < 0.1
    assert created.status_code == 422, created.text
    assert reason in created.json()["detail"]
    assert created_seconds < 0.1
    assert (await api.get("/v1/rules/bomb")).status_code == 404, "nothing stored"


@pytest.mark.parametrize(
    "source",
    [
        # Three macros, each within the count, but nested three deep.
        "[1].all(a, [1].all(b, [1].all(c, true)))",
        # Three macros, two nested: a list grown by + to 4,000 elements (an index hides it behind "]"),
        # each element against every item of an event list: 400,000 iterations for 100 items.
        "[[{l}]].map(x, {g})[0].all(a, event.items.exists(b, b > a + 99))".format(
            l=",".join(["0"] * 40), g="+".join(["x"] * 100)
        ),
        # Brackets nested deeper than the parser should recurse.
        "(" * 40 + "true" + ")" * 40,
    ],
    ids=["depth", "iterations", "brackets"],
)
def test_cel_shape_limits_are_read_from_the_token_tree(source: str) -> None:
    with pytest.raises(ConditionSyntaxError):
        compile_condition(source)


def test_a_condition_that_blows_its_time_budget_is_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    condition = compile_condition("event.items.all(a, event.items.all(b, a >= 0))")
    context = make_context({}, {"items": list(range(300))})
    monkeypatch.setattr(conditions, "EVALUATION_BUDGET_SECONDS", 0.0)  # any evaluation overruns
    for _ in range(conditions.EVALUATION_STRIKES):
        assert condition.evaluate(context) is True
    with pytest.raises(ConditionRuntimeError, match="disabled"):
        condition.evaluate(context)
