"""The full-text pieces of a search statement, spelled for SQLite (FTS5) and for PostgreSQL.

Everything dialect-specific lives here: which rows match a :class:`~service.fulltext.query.SearchQuery`,
their relevance and their highlighted text. The rest of a search (filters, order, pages) is ordinary
SQLAlchemy shared by both.

Relevance is an integer computed from the utterance and the query alone, never from the rest of the
index (FTS5's ``bm25`` weighs terms by how rare they are, so every insert would move existing results
and a cursor could skip or repeat them): SQLite, a million times the matches per word of the utterance
(four words added, so that a one-word utterance does not outrank everything); PostgreSQL, a million
times ``ts_rank`` divided by the number of distinct words of the utterance (normalisation 8). Higher is
better on both.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ColumnElement,
    FromClause,
    Integer,
    Select,
    String,
    and_,
    bindparam,
    cast,
    column,
    func,
    literal_column,
    not_,
    or_,
    select,
    table,
    text,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import Join

from service.db.models import TranscriptUtterance
from service.db.statements import table_of
from service.fulltext.query import SearchQuery

UTTERANCE = table_of(TranscriptUtterance)
# Highlight markers, turned into <mark> after the text is HTML-escaped (service.search.service).
MARK_START, MARK_END = "\x02", "\x03"
_CONFIG: ColumnElement[Any] = literal_column("'switchboard_search'::regconfig")
# FTS5 names the table itself in MATCH and in its functions; not a model: created by migration 0010.
_FTS: ColumnElement[Any] = literal_column("transcript_fts")
_FTS_ROWS = table("transcript_fts", column("rowid", Integer))
# PostgreSQL: the stored to_tsvector('switchboard_search', text), GIN-indexed (migration 0010).
_DOCUMENT: ColumnElement[Any] = literal_column("transcript_utterance.search_document")
# Relevance scale: integers compare exactly in a cursor, where floats would need care.
_SCALE = 1_000_000


def postgresql_query(query: SearchQuery) -> ColumnElement[Any]:
    """``to_tsquery`` of the parsed query, its text a bound parameter."""
    return func.to_tsquery(_CONFIG, bindparam("tsquery", query.tsquery(), type_=String))


class SearchColumns:
    """What one backend adds to a search: the FROM, the match condition, relevance and highlight."""

    def __init__(self, query: SearchQuery, *, sqlite: bool, calls: Select[Any] | None = None) -> None:
        """``calls``: the ids (column ``call_id``) of the only calls to search, when they are few. SQLite
        then looks for matches call by call, each within the rowids of that call's utterances (one
        range of the full-text index per call; a lookup per rowid costs as much as a whole range)."""
        self.source: FromClause
        self.relevance: ColumnElement[Any] | None
        # The utterance's id as the full-text index sees it: ranges and order on it are the index's own
        # (FTS5 walks its doclists by rowid, either way, from any bound).
        self.row_id: ColumnElement[int]
        if sqlite:
            on = UTTERANCE.c.id == _FTS_ROWS.c.rowid
            if calls is None:
                self.source, self.row_id = UTTERANCE.join(_FTS_ROWS, on), _FTS_ROWS.c.rowid
            else:
                chosen = calls.subquery("chosen")
                spoken = CrossJoin(chosen, _FTS_ROWS, _FTS_ROWS.c.rowid.between(*call_span(chosen.c.call_id)))
                self.source = CrossJoin(spoken, UTTERANCE, and_(on, UTTERANCE.c.call_id == chosen.c.call_id))
                self.row_id = UTTERANCE.c.id
            self.matches = _FTS.op("MATCH")(bindparam("match", query.fts5(), type_=String))
            self.highlight = func.highlight(_FTS, 0, MARK_START, MARK_END)
            self.relevance = None  # sqlite_relevance() of the highlight, once it is computed
        else:
            document, tsquery = _DOCUMENT, postgresql_query(query)
            self.source = UTTERANCE
            self.row_id = UTTERANCE.c.id
            self.matches = document.op("@@")(tsquery)
            options = f"StartSel={MARK_START}, StopSel={MARK_END}, HighlightAll=true"
            self.highlight = func.ts_headline(_CONFIG, UTTERANCE.c.text, tsquery, options)
            self.relevance = cast(func.ts_rank(document, tsquery, 8) * _SCALE, BigInteger)


def call_span(call_id: ColumnElement[Any]) -> tuple[ColumnElement[int], ColumnElement[int]]:
    """The lowest and highest utterance id of the call ``call_id`` (scalar subqueries, correlated)."""
    spoken = UTTERANCE.alias("spoken")
    of_call = spoken.c.call_id == call_id
    # correlate_except: correlated with whichever enclosing query holds ``call_id``'s table.
    return (
        select(func.min(spoken.c.id)).where(of_call).correlate_except(spoken).scalar_subquery(),
        select(func.max(spoken.c.id)).where(of_call).correlate_except(spoken).scalar_subquery(),
    )


class CrossJoin(Join):
    """SQLite's ``CROSS JOIN … ON``: an inner join whose left side the planner keeps as the outer loop."""

    inherit_cache = True


@compiles(CrossJoin, "sqlite")
def _cross_join(element: CrossJoin, compiler: SQLCompiler, **kw: Any) -> str:
    assert element.onclause is not None
    kw["asfrom"] = True
    left, right = compiler.process(element.left, **kw), compiler.process(element.right, **kw)
    return f"{left} CROSS JOIN {right} ON {compiler.process(element.onclause, **kw)}"


def sqlite_relevance(highlight: ColumnElement[Any], text: ColumnElement[Any]) -> ColumnElement[Any]:
    """SQLite's relevance from the highlighted text: counting the markers counts the matches (a phrase
    is one), words are counted by spaces. ``highlight`` should be a column computed once per row:
    FTS5 tokenizes the utterance again for each call of ``highlight()``."""
    hits = func.length(highlight) - func.length(func.replace(highlight, MARK_START, ""))
    words = func.length(text) - func.length(func.replace(text, " ", "")) + 5
    return cast(hits * _SCALE / words, BigInteger)


_SEARCH_PLANNING = text(
    "SELECT set_config('plan_cache_mode', 'force_custom_plan', true), "
    "set_config('max_parallel_workers_per_gather', '0', true)"
)


async def plan_each_search(session: AsyncSession) -> None:
    """PostgreSQL: plan the rest of this transaction's statements for their own query, in one process.
    A generic plan (after five runs of a prepared statement) cannot know whether a word is rare (GIN
    index) or common (primary key); parallel workers take longer to start than a bounded search runs."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(_SEARCH_PLANNING)


# SQLite, GET /v1/calls?q=: a query with at least this many matches is checked batch by batch of calls
# (sqlite_batch_saying), a rarer one lists its matches' calls (CallsSaying). Listing costs ~3 µs a match,
# a batch ~3 µs a call checked; with 100,000 calls of 20 utterances the two cost the same around 4,000
# matches (bench/search.py).
MANY_MATCHES = 5_000


async def sqlite_matches_many(session: AsyncSession, query: SearchQuery) -> bool:
    """The query matches at least ``MANY_MATCHES`` utterances (a walk of that many index entries, at most)."""
    columns = SearchColumns(query, sqlite=True)
    walk = select(_FTS_ROWS.c.rowid).select_from(_FTS_ROWS).where(columns.matches).limit(MANY_MATCHES)
    return (await session.scalar(select(func.count()).select_from(walk.subquery()))) == MANY_MATCHES


def sqlite_batch_saying(batch: Select[Any], query: SearchQuery) -> Select[Any]:
    """SQLite: the calls of ``batch`` (columns ``id`` and ``created_at``) that have an utterance matching
    the query, and the batch's last call whether it does or not (where the next batch starts), newest
    first: columns ``id``, ``created_at``, ``said`` and ``checked`` (how many calls the batch has).

    For ``GET /v1/calls?q=`` with a query said often: a page is found within a few batches of calls,
    where listing every match's call (:class:`CallsSaying`) would read them all. One walk of the index
    over the batch's span of utterance ids (from the lowest to the highest of all its calls) instead
    of one per call: a walk starts with a seek into each term's doclist, which costs more than the walk
    over a call's few utterances (at 2,000,000 utterances, ~0.15 ms a call for a word, ~0.5 ms for a
    phrase of common words). The span also holds the utterances of other calls spoken meanwhile (calls
    overlap) or left out by the other filters: when they are most of it, the matches' rowids are listed
    and the batch's own utterances looked up in the list, instead of each match looked up for its call.
    """
    chosen = batch.cte("batch").prefix_with("MATERIALIZED")  # read once, used several times
    span = (
        select(
            func.min(UTTERANCE.c.id).label("low"),
            func.max(UTTERANCE.c.id).label("high"),
            func.count().label("utterances"),
        )
        .where(UTTERANCE.c.call_id.in_(select(chosen.c.id)))
        .cte("span")
        .prefix_with("MATERIALIZED")  # computed once, not once per use
    )
    low, high = select(span.c.low).scalar_subquery(), select(span.c.high).scalar_subquery()
    in_span = and_(SearchColumns(query, sqlite=True).matches, _FTS_ROWS.c.rowid.between(low, high))
    # Other calls' utterances are most of the span. A constant condition (it names no table of the
    # statements it guards): SQLite evaluates it once, before either runs, so only one of them walks.
    sparse = select(span.c.high - span.c.low + 1 > 2 * span.c.utterances).scalar_subquery()
    looked_up = (
        select(UTTERANCE.c.call_id.label("call_id"))
        .select_from(CrossJoin(_FTS_ROWS, UTTERANCE, UTTERANCE.c.id == _FTS_ROWS.c.rowid))
        .where(in_span, not_(sparse))
    )
    listed = select(_FTS_ROWS.c.rowid).select_from(_FTS_ROWS).where(in_span)
    probed = (
        select(chosen.c.id.label("call_id"))
        .select_from(CrossJoin(chosen, UTTERANCE, UTTERANCE.c.call_id == chosen.c.id))
        .where(UTTERANCE.c.id.in_(listed), sparse)
    )
    saying = union_all(looked_up, probed).cte("saying").prefix_with("MATERIALIZED")  # one walk, read twice
    said = chosen.c.id.in_(select(saying.c.call_id))
    # Not every call of the batch: a row costs more to turn into Python (its time parsed) than to check.
    last = select(chosen.c.id).order_by(chosen.c.created_at, chosen.c.id).limit(1).scalar_subquery()
    checked = select(func.count()).select_from(chosen).scalar_subquery()
    rows = select(chosen.c.id, chosen.c.created_at, said.label("said"), checked.label("checked"))
    return rows.where(or_(said, chosen.c.id == last)).order_by(chosen.c.created_at.desc(), chosen.c.id.desc())


class CallsSaying(ColumnElement[bool]):
    """The call ``call_id`` has an utterance matching the query, for ``GET /v1/calls?q=``.

    ``call_id IN (the calls with a matching utterance)``, uncorrelated: each database runs the
    full-text search once and probes the result, instead of once per call (PostgreSQL also turns it into
    a semi-join, probing per call when that is cheaper). SQLite checks a query with many matches batch by
    batch of calls instead (:func:`sqlite_batch_saying`).
    """

    inherit_cache = False  # the query text is rendered as a bound value at compile time
    type = Boolean()

    def __init__(self, call_id: ColumnElement[Any] | Any, query: SearchQuery) -> None:
        self.call_id = call_id
        self.query = query


@compiles(CallsSaying)
def _calls_saying(element: CallsSaying, compiler: SQLCompiler, **kw: Any) -> str:
    columns = SearchColumns(element.query, sqlite=compiler.dialect.name == "sqlite")
    matching = select(UTTERANCE.c.call_id).select_from(columns.source).where(columns.matches)
    return compiler.process(element.call_id.in_(matching), **kw)
