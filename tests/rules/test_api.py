"""The rules API: CRUD of stored rules, file rules read-only, validation, scopes, firings listing."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import update

from service.apikeys.service import ApiKeyService
from service.db.engine import Database
from service.db.models import Rule
from service.metrics import Metrics
from service.rules.engine import RuleEngine
from service.rules.service import RuleService
from service.settings import ConfigurationError
from tests.harness import app_client, build_app

FILE_RULES = """
rules:
  - name: from-file
    on: call.answered
    say: "From the file."
"""
GOOD = {
    "name": "cancel-intent",
    "on": "transcript",
    "if": 'event.role == "user"',
    "say": "Wait, {{ call.customer.name }}!",
}


@pytest.fixture
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[AsyncTestClient[Any]]:
    path = tmp_path / "rules.yaml"
    path.write_text(FILE_RULES)
    async with app_client(build_app(database_url, rules_file=path)) as test_client:
        yield test_client


async def test_create_get_replace_delete_a_stored_rule(client: AsyncTestClient[Any]) -> None:
    created = await client.post("/v1/rules", json=GOOD)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["source"] == "api"
    assert body["compiled"]["action"]["content"] == "Wait, {{ call.customer.name }}!"
    assert body["compiled"]["templateFields"] == ["call.customer.name"]

    listed = (await client.get("/v1/rules")).json()
    assert [(rule["name"], rule["source"]) for rule in listed["data"]] == [
        ("cancel-intent", "api"),
        ("from-file", "file"),
    ]

    assert (await client.post("/v1/rules", json=GOOD)).status_code == 409, "duplicate name"
    replaced = await client.put("/v1/rules/cancel-intent", json={**GOOD, "once": False})
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["compiled"]["once"] is False
    assert (await client.get("/v1/rules/cancel-intent")).json()["document"]["once"] is False

    new = await client.put("/v1/rules/by-put", json={"on": "call.ringing", "action": {"type": "end-call"}})
    assert new.status_code == 201, new.text
    assert new.json()["document"]["name"] == "by-put"

    assert (await client.delete("/v1/rules/cancel-intent")).status_code == 204
    assert (await client.get("/v1/rules/cancel-intent")).status_code == 404
    assert (await client.delete("/v1/rules/cancel-intent")).status_code == 404


async def test_puts_racing_to_create_the_same_rule_all_succeed_one_creates(database_url: str) -> None:
    """On PostgreSQL the row lock of a PUT locks nothing while the rule does not exist yet: the PUT
    that loses the insert race replaces the winner's rule instead of failing (a 500)."""
    db = Database(database_url)
    engine = RuleEngine(db, cast(Any, None), Metrics(), file_rules=[])
    rules = RuleService(db, engine)
    rule = {"on": "call.ringing", "action": {"type": "end-call"}}
    try:
        for round_ in range(5):
            answers = await asyncio.gather(*(rules.put_rule(f"raced-{round_}", rule) for _ in range(4)))
            assert sorted(created for _, created in answers) == [False, False, False, True]
    finally:
        await db.dispose()


async def test_an_update_stamped_before_the_newest_rule_is_still_loaded(database_url: str) -> None:
    """Replicas' clocks differ: a rule updated by a replica whose clock is behind gets a stamp older than
    another rule's. Every engine must still load it."""
    db = Database(database_url)
    engine = RuleEngine(db, cast(Any, None), Metrics(), file_rules=[])
    now = dt.datetime.now(dt.UTC)
    try:
        async with db.write() as session:
            for name, minutes in (("older", 10), ("newer", 1)):
                document = {"name": name, "on": "call.ringing", "say": "Hello."}
                stamp = now - dt.timedelta(minutes=minutes)
                session.add(Rule(name=name, document=document, created_at=stamp, updated_at=stamp))
        await engine.refresh()
        assert engine.book.rules["older"].action.content == "Hello."  # type: ignore[union-attr]
        async with db.write() as session:  # another replica, 5 minutes behind, updates "older"
            await session.execute(
                update(Rule)
                .where(Rule.name == "older")
                .values(
                    document={"name": "older", "on": "call.ringing", "say": "Bonjour."},
                    updated_at=now - dt.timedelta(minutes=5),
                )
            )
        await engine.refresh()
        assert engine.book.rules["older"].action.content == "Bonjour."  # type: ignore[union-attr]
    finally:
        await db.dispose()


async def test_file_rules_are_read_only(client: AsyncTestClient[Any]) -> None:
    assert (await client.get("/v1/rules/from-file")).json()["source"] == "file"
    for response in (
        await client.delete("/v1/rules/from-file"),
        await client.put("/v1/rules/from-file", json={"on": "call.answered", "say": "x"}),
        await client.post("/v1/rules", json={"name": "from-file", "on": "call.answered", "say": "x"}),
    ):
        assert response.status_code == 409, response.text
        assert "read-only" in response.json()["detail"]


INVALID: list[tuple[dict[str, Any], str, str]] = [
    ({**GOOD, "if": "event.role =="}, "if", "invalid CEL: at 1:14: Syntax error"),
    ({**GOOD, "on": "transcripts"}, "on", "unknown milestone 'transcripts' (did you mean 'transcript'?)"),
    ({**GOOD, "say": "Hi {{ call.customer.name "}, "say", "template syntax error at line 1"),
    ({**GOOD, "delay": "-2s"}, "delay", "the duration must not be negative"),
    ({**GOOD, "on": "call.ended"}, "say", "a say cannot be heard on call.ended"),
    ({**GOOD, "name": "Bad Name"}, "name", "must match [a-z0-9-]+"),
    ({**GOOD, "action": {"type": "say", "content": "x"}}, "action", "give either say (shorthand) or action"),
    ({**GOOD, "say": "{{ call.__class__ }}"}, "say", "names starting with '_' are private"),
]


async def test_invalid_rules_are_rejected_with_a_precise_message(client: AsyncTestClient[Any]) -> None:
    for document, field, reason in INVALID:
        response = await client.post("/v1/rules", json=document)
        assert response.status_code == 422, response.text
        problem = response.json()
        assert problem["type"].endswith("/invalid-input")
        [error] = problem["errors"]
        assert (error["rule"], error["field"]) == (document["name"], field)
        assert reason in error["reason"], error
        assert reason in problem["detail"]
    # The rest of the rule set keeps working.
    assert [rule["name"] for rule in (await client.get("/v1/rules")).json()["data"]] == ["from-file"]


async def test_validate_returns_the_compiled_form_or_every_error(client: AsyncTestClient[Any]) -> None:
    good = await client.post("/v1/rules/validate", json=GOOD)
    assert good.status_code == 200
    assert good.json()["valid"] is True
    assert good.json()["rules"][0]["on"] == "transcript"
    bad = await client.post("/v1/rules/validate", json={"rules": [GOOD, GOOD, {"name": "x", "on": "nope"}]})
    body = bad.json()
    assert body["valid"] is False
    assert [(e["rule"], e["field"]) for e in body["errors"]] == [("cancel-intent", "name"), ("x", "on"), ("x", "say")]
    assert "duplicate name" in body["errors"][0]["reason"]
    assert (await client.get("/v1/rules")).json()["data"][0]["name"] == "from-file", "validate stores nothing"


async def test_scopes(client: AsyncTestClient[Any], database_url: str) -> None:
    db = Database(database_url)
    try:
        _, reader = await ApiKeyService(db, admin_key=None).create("reader", ["rules:read"])
        _, calls_reader = await ApiKeyService(db, admin_key=None).create("calls", ["calls:read"])
    finally:
        await db.dispose()
    as_reader = {"Authorization": f"Bearer {reader}"}
    assert (await client.get("/v1/rules", headers=as_reader)).status_code == 200
    assert (await client.post("/v1/rules", json=GOOD, headers=as_reader)).status_code == 403
    assert (await client.delete("/v1/rules/from-file", headers=as_reader)).status_code == 403
    assert (await client.get("/v1/calls/nope/firings", headers=as_reader)).status_code == 403
    as_calls = {"Authorization": f"Bearer {calls_reader}"}
    assert (await client.get("/v1/calls/nope/firings", headers=as_calls)).status_code == 404


async def test_a_rules_file_with_errors_refuses_start_up_listing_them_all(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "rules:\n  - name: a\n    on: call.answerd\n    say: hi\n"
        "  - name: a\n    on: call.answered\n    delay: -1\n    say: hi\n"
    )
    with pytest.raises(ConfigurationError) as raised:
        build_app(database_url, rules_file=path)
    message = str(raised.value)
    assert "rule 'a', field 'on' (line 3): unknown milestone 'call.answerd'" in message
    assert "rule 'a', field 'delay' (line 7): the duration must not be negative" in message
