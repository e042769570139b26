"""The search query parser: what it accepts, what it writes for each engine, and that nothing it writes
can fail to parse in FTS5 or PostgreSQL (property tests against the real engines)."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from service.db.engine import Database
from service.fulltext.query import BadSearchQueryError, SearchQuery, Term, Word, parse_query


def test_words_phrases_and_prefixes() -> None:
    query = parse_query('Refund  "cancel MY pl*" policy* ')
    assert query == SearchQuery(
        (
            Term((Word("refund"),)),
            Term((Word("cancel"), Word("my"), Word("pl", prefix=True))),
            Term((Word("policy", prefix=True),)),
        )
    )
    assert query.fts5() == '"refund" AND "cancel" + "my" + "pl"* AND "policy"*'
    assert query.tsquery() == "'refund' & ('cancel' <-> 'my' <-> 'pl':*) & 'policy':*"


def test_punctuation_and_operators_only_separate_words() -> None:
    query = parse_query("NEAR(a, b) OR -c AND d:* 'e' <-> f|g & h^i")
    assert [word.text for term in query.terms for word in term.words] == [
        "near", "a", "b", "or", "c", "and", "d", "e", "f", "g", "h", "i",
    ]  # fmt: skip
    assert not any(word.prefix for term in query.terms for word in term.words)


def test_open_quote_runs_to_the_end_and_empty_phrases_vanish() -> None:
    assert parse_query('"cancel my').terms == (Term((Word("cancel"), Word("my"))),)
    assert parse_query('"" refund ""').terms == (Term((Word("refund"),)),)


def test_accented_and_other_scripts_stay_words() -> None:
    assert parse_query("Café ÉCOLE straße 東京 ﬁne").terms == tuple(
        Term((Word(word),)) for word in ("café", "école", "straße", "東京", "fine")
    )


@pytest.mark.parametrize(
    "bad", ["", "   ", "!!!", '""', "*", "a*", "x" * 501, " ".join(["w"] * 17), '"' + " ".join(["w"] * 33) + '"']
)
def test_nothing_to_search_for_is_refused(bad: str) -> None:
    with pytest.raises(BadSearchQueryError) as raised:
        parse_query(bad)
    assert raised.value.status_code == 400


@pytest.fixture(scope="module")
def fts5() -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(":memory:")
    connection.execute(
        "CREATE VIRTUAL TABLE t USING fts5(text, tokenize='porter unicode61 remove_diacritics 2', prefix='2 3')"
    )
    connection.execute("INSERT INTO t (text) VALUES ('cancel my plan'), ('naïve café \"quoted\" it''s')")
    yield connection
    connection.close()


PIECES = [*"ab é\"'*():^-+&|!<>\\{}[],.;`~_\t\n0東ﬁ", " NEAR ", " AND ", " OR ", " NOT "]
NASTY = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)


@settings(max_examples=400, deadline=None)
@given(NASTY)
def test_every_accepted_query_is_valid_fts5(fts5: sqlite3.Connection, query: str) -> None:
    try:
        parsed = parse_query(query)
    except BadSearchQueryError:
        return
    fts5.execute("SELECT rowid, highlight(t, 0, '[', ']') FROM t WHERE t MATCH ?", (parsed.fts5(),)).fetchall()


async def test_every_accepted_query_is_a_valid_tsquery(postgresql_url: str) -> None:
    rng = random.Random(17)
    alphabet = [*PIECES, " the "]
    queries = ["the", "'", "\\", "a'b", "x:*", "!!a", '"the of"', "le café*", "don't stop"]
    queries += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(300)]
    db = Database(postgresql_url)
    try:
        async with db.read() as session:
            for query in queries:
                try:
                    parsed = parse_query(query)
                except BadSearchQueryError:
                    continue
                await session.execute(
                    text("SELECT to_tsquery('switchboard_search'::regconfig, :q)"), {"q": parsed.tsquery()}
                )
    finally:
        await db.dispose()
