"""GET /v1/search/transcripts and GET /v1/calls?q= on both databases."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine, delete, event, func, select, text

from service.calls import service as calls_service
from service.db.models import Call, TranscriptUtterance
from service.fulltext import sql as fulltext_sql
from tests.search.conftest import Calls


async def test_words_match_in_any_order_stemmed_and_case_insensitive(calls: Calls) -> None:
    await calls.start("call-1")
    await calls.say("call-1", "user", "I would like a REFUND for last month.")
    await calls.say("call-1", "assistant", "Refunds take five days.")
    await calls.say("call-1", "user", "Thanks, that helps.")

    assert sorted(await calls.texts("refund")) == ["I would like a REFUND for last month.", "Refunds take five days."]
    assert await calls.texts("month refunded") == ["I would like a REFUND for last month."], "all words, any order"
    assert await calls.texts("refund thanks") == [], "every word must match in one utterance"
    assert await calls.texts("helping") == ["Thanks, that helps."], "stemmed"


async def test_phrases_keep_word_order_and_adjacency(calls: Calls) -> None:
    await calls.start("call-1")
    await calls.say("call-1", "user", "I want to cancel my plan today.")
    await calls.say("call-1", "user", "My plan? I cancel it.")
    await calls.say("call-1", "user", "Cancel the whole plan.")

    assert await calls.texts('"cancel my plan"') == ["I want to cancel my plan today."]
    assert sorted(await calls.texts("cancel plan")) == [
        "Cancel the whole plan.",
        "I want to cancel my plan today.",
        "My plan? I cancel it.",
    ]
    assert await calls.texts('"my plan" today') == ["I want to cancel my plan today."]
    assert await calls.texts('"plan cancel"') == []
    assert await calls.texts('"cancel my pl*"') == ["I want to cancel my plan today."], "prefix inside a phrase"
    assert await calls.texts('"cancel the whole') == ["Cancel the whole plan."], "an open quote runs to the end"


async def test_prefixes(calls: Calls) -> None:
    await calls.start("call-1")
    await calls.say("call-1", "user", "The subscription renewal failed.")
    await calls.say("call-1", "user", "Subtitles please.")
    await calls.say("call-1", "assistant", "A renewable plan.")

    assert sorted(await calls.texts("sub*")) == ["Subtitles please.", "The subscription renewal failed."]
    assert sorted(await calls.texts("renew*")) == ["A renewable plan.", "The subscription renewal failed."]
    assert await calls.texts("subscr* renew*") == ["The subscription renewal failed."]
    assert await calls.texts("xyz*") == []


async def test_accents_are_ignored_both_ways(calls: Calls) -> None:
    await calls.start("call-1")
    await calls.say("call-1", "user", "Je voudrais un café crème à emporter.")
    await calls.say("call-1", "user", "The cafe on Main Street, by the resume shop.")
    await calls.say("call-1", "assistant", "Naïve question: is your résumé ready?")

    both = ["Je voudrais un café crème à emporter.", "The cafe on Main Street, by the resume shop."]
    assert sorted(await calls.texts("cafe")) == both
    assert sorted(await calls.texts("CAFÉ")) == both
    assert await calls.texts("creme") == ["Je voudrais un café crème à emporter."]
    assert await calls.texts('"naive question"') == ["Naïve question: is your résumé ready?"]
    assert sorted(await calls.texts("résu*")) == [
        "Naïve question: is your résumé ready?",
        "The cafe on Main Street, by the resume shop.",
    ]


async def test_highlights_mark_the_matches_in_escaped_text(calls: Calls) -> None:
    await calls.start("call-1")
    await calls.say("call-1", "user", "Refund <b>now</b> & then another refund")
    [hit] = (await calls.search("refund"))["data"]
    assert hit["highlight"] == "<mark>Refund</mark> &lt;b&gt;now&lt;/b&gt; &amp; then another <mark>refund</mark>"
    assert hit["text"] == "Refund <b>now</b> & then another refund"
    assert hit["callId"] == "call-1"
    assert hit["role"] == "user"
    assert isinstance(hit["seq"], int)
    assert dt.datetime.fromisoformat(hit["occurredAt"]).tzinfo is not None
    assert hit["offsetSeconds"] is None, "no recording"


async def test_each_final_utterance_is_indexed_once(calls: Calls) -> None:
    """The webhook and the listen copy are one utterance; two identical utterances are two; partial
    transcripts are not indexed; Vapi's qualified type is a final transcript too."""
    await calls.start("call-1")
    await calls.say("call-1", "user", "Yes")
    await calls.hear("call-1", "user", "yes ")  # the listen copy of the first "yes"
    await calls.say("call-1", "user", "ye", final=False)
    await calls.hear("call-1", "user", "yes")  # the listen socket heard the second "yes" first
    await calls.say("call-1", "user", "YES")  # its webhook copy
    await calls.say("call-1", "assistant", "yes")  # another role: another utterance
    await calls.say("call-1", "user", "yes indeed", kind='transcript[transcriptType="final"]')

    hits = (await calls.search("yes"))["data"]
    assert sorted((hit["role"], hit["text"]) for hit in hits) == [
        ("assistant", "yes"),
        ("user", "Yes"),  # the first copy of each is kept
        ("user", "yes"),
        ("user", "yes indeed"),
    ]


async def test_role_call_assistant_created_and_metadata_filters(calls: Calls) -> None:
    await calls.start("call-a", assistant="asst-1", team="billing", tier=3)
    await calls.start("call-b", assistant="asst-2", team="support", tier=1)
    await calls.say("call-a", "user", "Where is my refund?")
    await calls.say("call-a", "assistant", "Your refund is on its way.")
    await calls.say("call-b", "user", "Refund me now.")
    async with calls.db.read() as session:
        created = dict((await session.execute(select(Call.id, Call.created_at))).tuples().all())
    middle = created["call-a"] + (created["call-b"] - created["call-a"]) / 2

    async def found(**params: Any) -> list[tuple[str, str]]:
        return sorted((hit["callId"], hit["role"]) for hit in (await calls.search("refund", **params))["data"])

    assert await found() == [("call-a", "assistant"), ("call-a", "user"), ("call-b", "user")]
    assert await found(role="user") == [("call-a", "user"), ("call-b", "user")]
    assert await found(role="assistant") == [("call-a", "assistant")]
    assert await found(callId="call-b") == [("call-b", "user")]
    assert await found(assistantId="asst-1") == [("call-a", "assistant"), ("call-a", "user")]
    assert await found(**{"metadata.team": "support"}) == [("call-b", "user")]
    assert await found(**{"metadata.tier": "3", "role": "user"}) == [("call-a", "user")]
    assert await found(**{"metadata.team": "nobody"}) == []
    assert await found(createdAfter=middle.isoformat()) == [("call-b", "user")]
    assert await found(createdBefore=middle.isoformat()) == [("call-a", "assistant"), ("call-a", "user")]
    assert (await calls.search("refund", expect=400, role="robot"))["status"] == 400


async def test_relevance_first_then_recency(calls: Calls) -> None:
    await calls.start("call-1")
    await calls.say("call-1", "user", "A long sentence that mentions the refund only once in passing, really.")
    await calls.say("call-1", "user", "Refund.")
    await calls.say("call-1", "user", "Refund, refund, refund!")
    await calls.say("call-1", "assistant", "Refund.")  # as relevant as the user's, and newer
    await calls.say("call-1", "user", "Nothing to see here.")

    hits = (await calls.search("refund"))["data"]
    assert [(hit["role"], hit["text"]) for hit in hits] == [
        ("user", "Refund, refund, refund!"),
        ("assistant", "Refund."),
        ("user", "Refund."),
        ("user", "A long sentence that mentions the refund only once in passing, really."),
    ]


async def test_pages_neither_skip_nor_repeat_while_utterances_arrive(calls: Calls) -> None:
    await calls.start("call-1")
    await calls.start("call-2")
    originals = [f"refund {'please ' * (i % 4)}number {i}" for i in range(12)]
    for index, said in enumerate(originals):
        await calls.say(f"call-{index % 2 + 1}", "user", said)

    seen: list[str] = []
    cursor = None
    for page_number in range(20):
        params = {"limit": 5, **({"cursor": cursor} if cursor else {})}
        page = await calls.search("refund", **params)
        seen += [hit["text"] for hit in page["data"]]
        # Between pages, more matching utterances arrive: very relevant ones, and barely relevant ones.
        await calls.say("call-1", "user", f"refund refund {page_number}")
        await calls.say("call-2", "assistant", f"a refund mentioned in a long sentence, the {page_number}th")
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "no utterance twice"
    assert set(originals) <= set(seen), "every utterance stored before the first page is on a page"


@pytest.mark.parametrize("batch_by_batch", [False, True], ids=["listed", "batch-by-batch"])
async def test_calls_whose_transcript_matches(
    calls: Calls, monkeypatch: pytest.MonkeyPatch, batch_by_batch: bool
) -> None:
    if batch_by_batch:  # SQLite: every query counts as said often, checked batch by batch (PostgreSQL: the same)
        monkeypatch.setattr(fulltext_sql, "MANY_MATCHES", 1)
    await calls.start("call-a", team="billing")
    await calls.start("call-b", team="support")
    await calls.start("call-c", team="support")
    await calls.say("call-a", "user", "I need a refund")
    await calls.say("call-b", "assistant", "refunds are processed weekly")
    await calls.say("call-b", "user", "thanks for the refund")
    await calls.say("call-c", "user", "cancel my plan")

    async def found(**params: str) -> list[str]:
        response = await calls.client.get("/v1/calls", params=params)
        assert response.status_code == 200, response.text
        return [call["id"] for call in response.json()["data"]]

    assert await found(q="refund") == ["call-b", "call-a"], "each call once, newest first"
    assert await found(q="refund", **{"metadata.team": "support"}) == ["call-b"]
    assert await found(q='"my plan"') == ["call-c"]
    assert await found(q="refund", limit="1") == ["call-b"]
    assert await found(q="nothing") == []
    response = await calls.client.get("/v1/calls", params={"q": "?!"})
    assert response.status_code == 400
    assert response.json()["type"].endswith("bad-search-query")


@pytest.mark.parametrize("interleaved", [True, False], ids=["spoken-together", "one-after-another"])
async def test_calls_checked_batch_by_batch_are_each_listed_once_newest_first(
    calls: Calls, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, interleaved: bool
) -> None:
    """SQLite checks a query said often batch by batch of calls (here one or two calls a batch, for pages
    of two): whichever batch and page a call falls in, each call that said it is listed once, in order.
    The calls say it first, in the middle or last, so a batch must cover every utterance of each of its
    calls: spoken together (their utterances interleave: a batch's span is mostly other calls') or one
    after another (mostly its own, but with ``metadata.team``); an erased call, a call that said
    something else and one that said nothing are left out. PostgreSQL: the same answers."""
    monkeypatch.setattr(fulltext_sql, "MANY_MATCHES", 1)
    monkeypatch.setattr(calls_service, "FIRST_BATCH", 1)
    monkeypatch.setattr(calls_service, "LAST_BATCH", 2)
    batches: list[str] = []

    def count_batches(connection: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("WITH batch"):
            batches.append(statement)

    event.listen(Engine, "before_cursor_execute", count_batches)
    request.addfinalizer(lambda: event.remove(Engine, "before_cursor_execute", count_batches))
    names = [f"call-{number}" for number in range(10)]
    for number, name in enumerate(names):
        await calls.start(name, team="odd" if number % 2 else "even")
    says_it_in_turn = {0: 0, 1: 2, 3: 1, 4: 0, 7: 2, 8: 0, 9: 1}  # call number: when it says "refund"
    turns = [(number, turn) for turn in range(3) for number in range(10)]
    for number, turn in turns if interleaved else sorted(turns):
        if number != 6:  # call-6 says nothing at all
            said = "a refund" if says_it_in_turn.get(number) == turn else "no thanks"
            await calls.say(names[number], "user", f"{said}, turn {turn}")
    async with calls.db.write() as session:
        await session.execute(delete(Call).where(Call.id == "call-4"))
        newest_first = (await session.scalars(select(Call.id).order_by(Call.created_at.desc(), Call.id.desc()))).all()

    async def listed(**params: str) -> list[str]:
        seen: list[str] = []
        cursor = None
        for _ in range(20):
            page_params = {"q": "refund", "limit": "2", **params, **({"cursor": cursor} if cursor else {})}
            response = await calls.client.get("/v1/calls", params=page_params)
            assert response.status_code == 200, response.text
            seen += [call["id"] for call in response.json()["data"]]
            cursor = response.json()["nextCursor"]
            if cursor is None:
                return seen
        raise AssertionError("no last page")

    said_it = [name for name in newest_first if name in {"call-0", "call-1", "call-3", "call-7", "call-8", "call-9"}]
    assert await listed() == said_it
    assert await listed(**{"metadata.team": "odd"}) == [name for name in said_it if int(name[-1]) % 2]
    if calls.db.is_sqlite:
        assert len(batches) >= len(newest_first) // 2, "checked in batches of at most two calls"
    response = await calls.client.get("/v1/calls", params={"q": "refund", "cursor": "not-a-cursor"})
    assert response.status_code == 400, response.text


async def test_bad_queries_are_refused_and_hostile_ones_are_only_words(calls: Calls) -> None:
    await calls.start("call-1")
    await calls.say("call-1", "user", "NEAR the OR operator AND the column: text, not syntax")
    for bad in ("", "   ", '"" * - ()', "a*", "x" * 501, " ".join(["word"] * 17)):
        problem = await calls.search(bad, expect=400)
        assert problem["status"] == 400
    for hostile in (
        "NEAR(the operator)",
        "text: syntax",
        "operator OR AND NOT",
        "') OR 1=1 --",
        "'operator' & !syntax | <-> :*",
        '"the" + "operator"',
        "column^ {text} -not",
        "\\'operator\\'",
    ):
        hits = (await calls.search(hostile))["data"]
        assert len(hits) <= 1, hostile
    assert len((await calls.search("near operator column"))["data"]) == 1
    assert (await calls.search("refund", expect=400, cursor="not-a-cursor"))["status"] == 400


async def test_erasing_a_call_removes_its_utterances_from_the_index(calls: Calls) -> None:
    await calls.start("call-1")
    await calls.start("call-2")
    await calls.say("call-1", "user", "delete me please")
    await calls.say("call-2", "user", "keep me please")
    async with calls.db.write() as session:
        await session.execute(delete(Call).where(Call.id == "call-1"))
    assert await calls.texts("please") == ["keep me please"]
    async with calls.db.read() as session:
        assert await session.scalar(select(func.count()).select_from(TranscriptUtterance)) == 1
        if calls.db.is_sqlite:  # the external-content FTS5 index agrees with its table
            await session.execute(
                text("INSERT INTO transcript_fts (transcript_fts, rank) VALUES ('integrity-check', 1)")
            )


async def test_concurrent_copies_of_one_utterance_are_stored_once(calls: Calls) -> None:
    """The webhook and the listen copy written by concurrent transactions: the unique key decides."""
    await calls.start("call-1")
    said = [f"race number {i}" for i in range(8)]
    await asyncio.gather(
        *(step for text in said for step in (calls.say("call-1", "user", text), calls.hear("call-1", "user", text)))
    )
    assert sorted(await calls.texts("race", limit=20)) == said
