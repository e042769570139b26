"""Ranking windows: a search ranks at most CANDIDATE_WINDOW matches together (the newest, then the next
older, ...), found by each database's own plan; the plan chosen for filters on few calls gives the same
answers as the walk over the matches (GET /v1/calls?q= checked call by call: test_transcripts). Sizes
are shrunk here so that a handful of utterances spans windows."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from sqlalchemy import func, select

from service.db.models import Call, TranscriptUtterance
from service.fulltext.ceilings import settle_ceilings
from service.search import service as search_service
from tests.search.conftest import Calls


async def all_pages(
    calls: Calls, q: str, *, limit: int, between: Any = None, cursors: bool = False, **params: Any
) -> list[str]:
    """Every hit's text, page after page (and each next cursor, with ``cursors``); ``between`` runs after
    each page."""
    seen: list[str] = []
    cursor = None
    for _ in range(100):
        page = await calls.search(q, limit=limit, **({"cursor": cursor} if cursor else {}), **params)
        seen += [hit["text"] for hit in page["data"]]
        if between is not None:
            await between()
        cursor = page["nextCursor"]
        if cursors:
            seen.append(f"cursor {cursor}")
        if cursor is None:
            return seen
    raise AssertionError("no last page")


# PostgreSQL's walk (PROBE_ROWS, DENSE_WALK, SPARSE_MATCHES): the probe alone; the probe, then ranges;
# the probe, then the dense walk; the probe, then every older match through the GIN index.
@pytest.mark.parametrize(
    "walk", [(2000, 20_000, 10_000), (2, 1, 0), (4, 8, 0), (2, 1, 1000)], ids=["probe", "ranges", "dense", "gin"]
)
async def test_a_result_larger_than_the_window_pages_window_by_window_each_match_once(
    calls: Calls, monkeypatch: pytest.MonkeyPatch, walk: tuple[int, int, int]
) -> None:
    for name, value in zip(("PROBE_ROWS", "DENSE_WALK", "SPARSE_MATCHES"), walk, strict=True):
        monkeypatch.setattr(search_service, name, value)
    await calls.start("call-1")
    await calls.start("call-2")
    # Said in this order (ids ascending); relevance varies with how many times the word is said.
    said = [f"refund {'refund ' * (i % 3)}{'and more words ' * (i % 2)}number {i}" for i in range(11)]
    for index, text in enumerate(said):
        await calls.say(f"call-{index % 2 + 1}", "user", text)
        await calls.say("call-1", "assistant", f"nothing to find {index}")
    whole = await all_pages(calls, "refund", limit=100)
    assert sorted(whole) == sorted(said), "one window: every match, best first"

    monkeypatch.setattr(search_service, "CANDIDATE_WINDOW", 4)
    monkeypatch.setattr(search_service, "FIRST_RANGE", 3)  # PostgreSQL: several id ranges per window
    newest_first = said[::-1]
    windows = [newest_first[start : start + 4] for start in range(0, len(said), 4)]
    expected = [text for window in windows for text in whole if text in window]
    assert expected != whole, "the windows change the order"
    for limit in (1, 3, 4, 5, 100):
        assert await all_pages(calls, "refund", limit=limit) == expected, limit

    arrived: list[str] = []

    async def more() -> None:
        arrived.append(f"refund refund refund arrived {len(arrived)}")
        await calls.say("call-2", "user", arrived[-1])

    assert await all_pages(calls, "refund", limit=3, between=more) == expected, "a cursor pins its windows"
    assert (await calls.texts("refund", limit=1)) == [arrived[-1]], "a new search sees them"


async def test_filters_on_few_calls_give_what_the_walk_over_the_matches_gives(
    calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in range(4):
        await calls.start(f"call-{number}", team="billing" if number % 2 else "support", assistant=f"asst-{number}")
        for turn in range(3):
            await calls.say(f"call-{number}", "user", f"refund {'refund ' * turn}in call {number} turn {turn}")
            await calls.say(f"call-{number}", "assistant", f"no match in call {number} turn {turn}")
    monkeypatch.setattr(search_service, "CANDIDATE_WINDOW", 2)
    searches: list[dict[str, Any]] = [
        {"callId": "call-2"},
        {"metadata.team": "billing"},
        {"metadata.team": "billing", "role": "user"},
        {"assistantId": "asst-3"},
        {"callId": "call-1", "metadata.team": "support"},  # nothing
    ]
    for params in searches:
        monkeypatch.setattr(search_service, "SELECTIVE_UTTERANCES", 0)  # never: walk the matches
        walked = await all_pages(calls, "refund", limit=2, **params)
        monkeypatch.setattr(search_service, "SELECTIVE_UTTERANCES", 1000)  # always: the calls first
        from_calls = await all_pages(calls, "refund", limit=2, **params)
        assert from_calls == walked, params
        assert len(walked) == len(set(walked)), params
    billing: dict[str, Any] = {"metadata.team": "billing"}
    assert len(await all_pages(calls, "refund", limit=2, **billing)) == 6
    assert await all_pages(calls, "refund", limit=2, **searches[-1]) == []


async def test_cursors_name_their_window(calls: Calls) -> None:
    await calls.start("call-1")
    for index in range(3):
        await calls.say("call-1", "user", f"refund {index}")
    cursor = (await calls.search("refund", limit=1))["nextCursor"]
    top, bottom, *position = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    assert bottom == 0, "one window, down to the oldest match"
    assert top >= 3

    def encoded(*parts: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(parts).encode()).decode().rstrip("=")

    for bad in (encoded(*position), encoded(bottom + 5, bottom + 9, *position), encoded(top, -1, *position)):
        assert (await calls.search("refund", expect=400, cursor=bad))["status"] == 400


async def test_filters_on_many_calls_with_a_common_query_give_what_the_walk_over_the_matches_gives(
    calls: Calls, monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in range(6):
        await calls.start(f"call-{number}", team="billing" if number % 2 else "support")
    for turn in range(3):  # the calls talk at once: an older call's utterances come after newer ones'
        for number in range(6):
            await calls.say(f"call-{number}", "user", f"refund {'refund ' * turn}in call {number} turn {turn}")
            await calls.say(f"call-{number}", "assistant", f"no match in call {number} turn {turn}")
    await calls.say("call-1", "user", "refund said last in call 1")
    async with calls.db.read() as session:
        created = dict((await session.execute(select(Call.id, Call.created_at))).tuples().all())
    middle = (created["call-2"] + (created["call-3"] - created["call-2"]) / 2).isoformat()
    assert await settle_ceilings(calls.db, quiet_for=0) == 6  # (else no call's ceiling is known)
    monkeypatch.setattr(search_service, "CANDIDATE_WINDOW", 2)
    monkeypatch.setattr(search_service, "SELECTIVE_UTTERANCES", 0)  # never the few-calls plan
    ceilings: list[int | None] = []
    narrowed = search_service.SearchService._narrowed

    async def spied(self: Any, *args: Any) -> search_service.SearchFilters:
        filters = await narrowed(self, *args)
        ceilings.append(filters.ceiling)
        return filters

    monkeypatch.setattr(search_service.SearchService, "_narrowed", spied)
    searches: list[dict[str, Any]] = [
        {"createdBefore": middle},
        {"createdAfter": middle},
        {"createdBefore": middle, "metadata.team": "billing", "role": "user"},
        {"createdAfter": middle, "metadata.team": "support"},
    ]
    for params in searches:
        monkeypatch.setattr(search_service, "MANY_CALLS", 0)  # never: walk every match
        ceilings.clear()
        walked = await all_pages(calls, "refund", limit=2, cursors=True, **params)
        assert set(ceilings) == {None}, params
        monkeypatch.setattr(search_service, "MANY_CALLS", 1000)  # always: from those calls' newest utterance
        monkeypatch.setattr(search_service, "SKIPPED_PER_CALL", 0)
        ceilings.clear()
        from_ceiling = await all_pages(calls, "refund", limit=2, cursors=True, **params)
        assert None not in ceilings, params
        assert from_ceiling == walked, params  # the same pages and cursors (windows)
        texts = [text for text in walked if not text.startswith("cursor ")]
        assert len(texts) == len(set(texts)), params
        every = list(await calls.texts("refund", limit=100, **params))
        assert sorted(texts) == sorted(every), params
    before = await all_pages(calls, "refund", limit=2, createdBefore=middle)
    assert len(before) == 10
    assert "refund said last in call 1" in before
    assert set(before[:2]) == {"refund said last in call 1", "refund refund refund in call 2 turn 2"}, "newest window"


async def test_a_calls_utterance_ceiling_is_settled_once_it_is_quiet_and_cleared_by_its_next_event(
    calls: Calls,
) -> None:
    await calls.start("call-a")
    await calls.start("call-b")
    await calls.start("call-silent")
    await calls.say("call-a", "user", "first")
    await calls.hear("call-a", "assistant", "second")  # the listen journal's path
    await calls.say("call-b", "user", "third")

    async def ceilings() -> dict[str, int | None]:
        async with calls.db.read() as session:
            return dict((await session.execute(select(Call.id, Call.utterance_ceiling))).tuples().all())

    assert set((await ceilings()).values()) == {None}, "events stored since: not known"
    assert await settle_ceilings(calls.db, quiet_for=60) == 0, "not quiet for a minute yet"
    assert await settle_ceilings(calls.db, quiet_for=0, batch=2) == 3  # two statements
    async with calls.db.read() as session:
        newest = select(TranscriptUtterance.call_id, func.max(TranscriptUtterance.id))
        spoken = dict((await session.execute(newest.group_by(TranscriptUtterance.call_id))).tuples().all())
    assert await ceilings() == {"call-a": spoken["call-a"], "call-b": spoken["call-b"], "call-silent": 0}
    await calls.say("call-a", "assistant", "a late one")
    assert (await ceilings())["call-a"] is None, "a new event: not known again"
    assert (await ceilings())["call-b"] == spoken["call-b"]
    assert await settle_ceilings(calls.db, quiet_for=0) == 1
    assert (await ceilings())["call-a"] == spoken["call-a"] + 2  # the late one (after call-b's)
