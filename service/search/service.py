"""Transcript search: the utterances matching a query, best first, a page at a time."""

from __future__ import annotations

import datetime as dt
import heapq
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Row,
    Select,
    Subquery,
    and_,
    any_,
    bindparam,
    func,
    or_,
    select,
    tuple_,
)
from sqlalchemy import text as sql
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from service.calls.service import CallFilters, calls_with_metadata
from service.db.engine import Database
from service.db.models import Call, CallEvent, Recording, RecordingSegment
from service.db.statements import table_of
from service.errors import InvalidQueryError
from service.fulltext.query import SearchQuery, parse_query
from service.fulltext.sql import (
    MARK_END,
    MARK_START,
    UTTERANCE,
    SearchColumns,
    plan_each_search,
    sqlite_relevance,
)
from service.pagination import BAD_CURSOR, decode_cursor, encode_cursor
from service.recordings.audio import SAMPLE_BYTES
from service.search.offsets import SegmentClock, SpeechUpdate, recording_offset, speech_start

_CALL = table_of(Call)
_EVENT = table_of(CallEvent)
_RECORDING = table_of(Recording)
_SEGMENT = table_of(RecordingSegment)
# How far back before a transcript its speech start is looked for, in timeline events (the partial
# transcripts and speech updates of both copies sit in between).
SPEECH_WINDOW_EVENTS = 200
# How many matches are ranked together, at most: the newest this many, then the next older this many, ...
# A query matching fewer is ranked whole. Bounds a common word's cost (see README, Search).
CANDIDATE_WINDOW = 500
# PostgreSQL looks for a window's matches in id ranges from the newest down, of at least this many ids,
# sized by the matches' density so far (four times longer while none; a GIN index knows no order: each
# range is a bounded scan, through the primary key for a common word or the GIN index for a rarer one,
# as the planner chooses) ...
FIRST_RANGE = 20_000
# ... after walking the newest PROBE_ROWS utterances through the primary key (bounded, and no GIN lookup,
# whose cost is its whole entry's: a phrase of common words costs as much in 2,000 ids as in 2,000,000),
# and the next DENSE_WALK that way too when the probe's density says they hold the rest of the window ...
PROBE_ROWS = 2_000
DENSE_WALK = 40_000
# ... or, when the probe's density says at most this many matches are older, all of them at once through
# the GIN index (a heap read each, where a range costs its length through the primary key).
SPARSE_MATCHES = 10_000
# The planner setting turned off for each of those walks (while they run).
_PLAN_SETTINGS = {"key": "enable_bitmapscan", "gin": "enable_seqscan"}
# The filters on the call (callId, metadata, ...) are applied first when they leave at most this many
# utterances to check.
SELECTIVE_UTTERANCES = 2_000
# Filters on more calls than that but at most this many: the walk over the matches starts at the
# highest ``utterance_ceiling`` of those calls (a column read per call) instead of walking every newer
# match to discard it (a common word in calls created before a date long past).
MANY_CALLS = 20_000
# ... when the newest NEWEST_CALLS of those calls end more than this many utterances per call allowed
# below the newest utterance (else the walk has little to skip, and reading every call's ceiling costs
# more than it saves: a filter on calls spread over the whole history, like an assistant or a team).
NEWEST_CALLS = 10
SKIPPED_PER_CALL = 10


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """What narrows a search besides its text (``GET /v1/search/transcripts``)."""

    role: str | None = None
    call_id: str | None = None
    assistant_id: str | None = None
    created_after: dt.datetime | None = None  # the call's creation
    created_before: dt.datetime | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Set by the search when the filters on the call leave few utterances: those calls' ids, which the
    # filters on the call then become (the database starts from them instead of from the matches).
    calls: Select[Any] | None = None
    # Set by the search when the filters on the call allow many calls, none of whose utterances is newer
    # than this id, and the query is common: the walk over the matches starts there.
    ceiling: int | None = None

    def columns(self, query: SearchQuery, *, sqlite: bool) -> SearchColumns:
        """The full-text pieces of a search with these filters."""
        return SearchColumns(query, sqlite=sqlite, calls=self.calls)

    def apply(self, query: Select[Any]) -> Select[Any]:
        """The filters as WHERE clauses on a query that selects from ``transcript_utterance``."""
        if self.role:
            query = query.where(UTTERANCE.c.role == self.role)
        if self.calls is not None:
            return query.where(UTTERANCE.c.call_id.in_(self.calls))
        if self.call_id:
            query = query.where(UTTERANCE.c.call_id == self.call_id)
        if self.assistant_id or self.created_after or self.created_before:
            query = query.join(_CALL, _CALL.c.id == UTTERANCE.c.call_id)
            if self.assistant_id:
                query = query.where(_CALL.c.assistant_id == self.assistant_id)
            if self.created_after:
                query = query.where(_CALL.c.created_at >= self.created_after)
            if self.created_before:
                query = query.where(_CALL.c.created_at < self.created_before)
        for key, value in self.metadata.items():
            # Many calls (else ``calls`` is set): their ids read once, not a probe per match.
            query = query.where(UTTERANCE.c.call_id.in_(calls_with_metadata(key, value)))
        return query

    def matching_calls(self, *, ceilings: bool = False, newest: int | None = None) -> Select[Any] | None:
        """The ids of the calls the filters on the call allow (as ``GET /v1/calls`` finds them: from the
        metadata index when there is a metadata filter), or with ``ceilings`` their ``utterance_ceiling``;
        only the ``newest`` of them if given; None without such a filter."""
        if not (self.call_id or self.assistant_id or self.created_after or self.created_before or self.metadata):
            return None
        calls = CallFilters(
            assistant_id=self.assistant_id,
            created_after=self.created_after,
            created_before=self.created_before,
            metadata=self.metadata,
        )
        query, (created_at, call_id) = calls.newest_first_calls()
        query = query.with_only_columns(Call.utterance_ceiling if ceilings else call_id.label("call_id"))
        if self.call_id:
            query = query.where(Call.id == self.call_id)
        if newest is not None:
            query = query.order_by(created_at.desc(), call_id.desc()).limit(newest)
        return query


@dataclass(frozen=True, slots=True)
class Hit:
    """One matching utterance."""

    call_id: str
    seq: int
    role: str
    text: str
    highlight: str  # the text, HTML-escaped, each match in <mark>…</mark>
    occurred_at: dt.datetime
    offset_seconds: float | None  # where it starts in the call's recording; None without one


@dataclass(frozen=True, slots=True)
class _Window:
    """A run of consecutive matches, by id: the ``CANDIDATE_WINDOW`` newest at or below some id, of which
    ``top`` is the newest (so that ranking the window again reads no newer match the filters discard).

    ``bottom`` is the oldest of them, or 0 when fewer were found (the last window: nothing older
    matches). A cursor pins its window, so inserts and deletes never move a page's neighbours."""

    top: int
    bottom: int

    @property
    def last(self) -> bool:
        return self.bottom == 0


@dataclass(frozen=True, slots=True)
class _Position:
    """Where a page ends: its window, then relevance, recency and the row id (unique) within it."""

    window: _Window
    relevance: int
    occurred_at: dt.datetime
    row_id: int

    def encode(self) -> str:
        window = self.window
        return encode_cursor(window.top, window.bottom, self.relevance, self.occurred_at.isoformat(), self.row_id)

    @classmethod
    def decode(cls, cursor: str) -> _Position:
        parts = decode_cursor(cursor)
        try:
            top, bottom, relevance, occurred_at, row_id = parts
            if not all(isinstance(number, int) for number in (top, bottom, relevance, row_id)):
                raise TypeError
            if not 0 <= bottom <= top:
                raise ValueError
            return cls(_Window(top, bottom), relevance, dt.datetime.fromisoformat(occurred_at), row_id)
        except (TypeError, ValueError):
            raise InvalidQueryError(BAD_CURSOR) from None


def highlighted(marked: str) -> str:
    """The database's marked text as safe HTML: escaped, the markers turned into ``<mark>`` tags."""
    return html.escape(marked, quote=False).replace(MARK_START, "<mark>").replace(MARK_END, "</mark>")


class SearchService:
    """Searches the transcript index (``service.search.index`` keeps it)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def matching(self, query: SearchQuery, filters: SearchFilters, *also: ColumnElement[Any]) -> Select[Any]:
        """The ids of the utterances that match (``SELECT id``, and ``also``, with the filters)."""
        columns = filters.columns(query, sqlite=self._db.is_sqlite)
        ids = select(columns.row_id.label("id"), *also).select_from(columns.source).where(columns.matches)
        return filters.apply(ids)

    def ranked(
        self,
        query: SearchQuery,
        filters: SearchFilters,
        window: _Window,
        ids: Sequence[int] = (),
        *,
        newest: bool = False,
    ) -> Select[Any]:
        """The matches of ``window`` with their relevance and highlight (a subquery to sort and page).
        ``ids``: the window's matches when just found (PostgreSQL then reads them by primary key).
        ``newest`` (SQLite): the window is the ``CANDIDATE_WINDOW`` newest matches of ``window``'s range,
        found by the same walk of the index that ranks them; each row then also carries the window's
        oldest and newest ids (``window_bottom``, ``window_top``) and its size (``window_size``)."""
        columns = filters.columns(query, sqlite=self._db.is_sqlite)
        utterance = (UTTERANCE.c.id, UTTERANCE.c.call_id, UTTERANCE.c.seq, UTTERANCE.c.role, UTTERANCE.c.text)
        matching = select(*utterance, UTTERANCE.c.occurred_at, columns.highlight.label("highlight"))
        matching = matching.select_from(columns.source).where(columns.matches)
        if ids and not self._db.is_sqlite:
            matching = matching.where(UTTERANCE.c.id == any_(bindparam("ids", list(ids), type_=ARRAY(BigInteger))))
        else:
            matching = filters.apply(matching.where(columns.row_id.between(window.bottom, window.top)))
        if columns.relevance is not None:
            return matching.add_columns(columns.relevance.label("relevance"))
        if newest:
            matching = matching.order_by(_walk_order(columns.row_id, filters).desc()).limit(CANDIDATE_WINDOW)
        # SQLite: highlight once per row (OFFSET 0 keeps the subquery from being flattened into the
        # outer query, which would repeat the call in each use), then relevance from it.
        highlighted = matching.offset(0).subquery("highlighted")
        relevance = sqlite_relevance(highlighted.c.highlight, highlighted.c.text)
        ranked = select(*highlighted.c, relevance.label("relevance"))
        if newest:
            size, bottom, top = (
                func.count().over(),
                func.min(highlighted.c.id).over(),
                func.max(highlighted.c.id).over(),
            )
            ranked = ranked.add_columns(
                bottom.label("window_bottom"), top.label("window_top"), size.label("window_size")
            )
        return ranked

    async def _narrowed(
        self, session: AsyncSession, query: SearchQuery, filters: SearchFilters, newest_id: int
    ) -> SearchFilters:
        """``filters``, with the calls they allow as a list of ids when those calls hold at most
        ``SELECTIVE_UTTERANCES`` utterances: probing each of those against the query is then cheaper than
        walking the query's matches (a word said in most calls, in one call of interest). With more
        calls (up to ``MANY_CALLS``), with the ``ceiling`` of those calls' utterances (``newest_id``: the
        newest utterance's)."""
        calls = filters.matching_calls()
        if calls is None:
            return filters
        # The calls first: a filter on many calls is told by its first few thousand ids.
        if await _count(session, calls, SELECTIVE_UTTERANCES) <= SELECTIVE_UTTERANCES:
            utterances = select(UTTERANCE.c.id).where(UTTERANCE.c.call_id.in_(calls))
            if await _count(session, utterances, SELECTIVE_UTTERANCES) <= SELECTIVE_UTTERANCES:
                return replace(filters, calls=calls)
        # The walk discards the matches of the calls left out that are newer than the calls' own: where
        # those end costs a column read per call, and the walk then starts there. Worth it when the
        # newest of those calls end far below the newest utterance (a date long past).
        newest = await session.scalar(_highest_ceiling(filters.matching_calls(ceilings=True, newest=NEWEST_CALLS)))
        skipped = newest_id - (newest or 0)
        if skipped < 0:  # a ceiling not known yet among the newest of those calls
            return filters
        most = min(MANY_CALLS, skipped // SKIPPED_PER_CALL) if SKIPPED_PER_CALL > 0 else MANY_CALLS
        if await _count(session, calls, most) > most:
            return filters
        ceiling = await session.scalar(_highest_ceiling(filters.matching_calls(ceilings=True)))
        return replace(filters, ceiling=ceiling or 0)

    async def _next_window(
        self, session: AsyncSession, query: SearchQuery, filters: SearchFilters, top: int, limit: int
    ) -> tuple[_Window | None, Sequence[Row[Any]]]:
        """The window of the ``CANDIDATE_WINDOW`` newest matches at or below ``top`` (None when nothing
        matches there), and its ``limit`` best rows."""
        if filters.ceiling is not None:
            top = min(top, filters.ceiling)
        if self._db.is_sqlite:
            # FTS5 walks a term's doclist by rowid, newest first: one statement finds and ranks the window.
            found = self.ranked(query, filters, _Window(top, 0), newest=True).subquery("found")
            rows = (await session.execute(_page(found, limit))).all()
            if not rows:
                return None, rows
            full = rows[0].window_size >= CANDIDATE_WINDOW
            return _Window(rows[0].window_top, rows[0].window_bottom if full else 0), rows
        window, matches = await self._postgresql_window(session, query, filters, top)
        if window is None:
            return None, []
        # The page's rows, highlighted: the window's best, read again by primary key.
        best = heapq.nlargest(limit, matches, key=lambda row: (row.relevance, row.occurred_at, row.id))
        found = self.ranked(query, filters, window, [row.id for row in best]).subquery("found")
        return window, (await session.execute(_page(found, limit))).all()

    async def _postgresql_window(
        self, session: AsyncSession, query: SearchQuery, filters: SearchFilters, top: int
    ) -> tuple[_Window | None, list[Row[Any]]]:
        """The ``CANDIDATE_WINDOW`` newest matches at or below ``top`` (id, time and relevance, newest
        first), walked from ``top`` down: the newest ``PROBE_ROWS`` utterances through the primary key;
        then, by the density of matches among them, the next ``DENSE_WALK`` the same way, or every older
        match through the GIN index (``SPARSE_MATCHES``), or ranges (``FIRST_RANGE``)."""
        columns = filters.columns(query, sqlite=False)
        assert columns.relevance is not None
        matching = self.matching(query, filters, UTTERANCE.c.occurred_at, columns.relevance.label("relevance"))
        found: list[Row[Any]] = []
        turned_off: str | None = None  # the planner setting in force (_PLAN_SETTINGS), changed only as needed

        async def planned(plan: str) -> None:
            nonlocal turned_off
            setting = _PLAN_SETTINGS.get(plan)
            if setting != turned_off:
                if turned_off:
                    await session.execute(sql(f"SET LOCAL {turned_off} TO DEFAULT"))
                if setting:
                    await session.execute(sql(f"SET LOCAL {setting} = off"))
                turned_off = setting

        async def newest(low: int, high: int, plan: str = "ranges") -> int:
            """Add the newest matches between ``low`` and ``high``; the id below ``low``."""
            # "gin": every match through the GIN index, sorted (an expression of the id: no walk of the
            # primary key); "key": the primary key's walk, no GIN lookup (which costs a whole entry's).
            row_id = _walk_order(UTTERANCE.c.id, filters) if plan != "gin" else UTTERANCE.c.id + 0
            statement = matching.where(row_id.between(low, high)).order_by(row_id.desc())
            await planned(plan)
            found.extend((await session.execute(statement.limit(CANDIDATE_WINDOW - len(found)))).all())
            return low - 1

        size, plan = 0, "ranges"
        if filters.calls is not None:  # the few calls' utterances, all at once
            high = await newest(0, top)
        else:
            high = await newest(max(top - PROBE_ROWS + 1, 0), top, "key")
            probed, walked = len(found), top - high
            if high < 0 or probed >= CANDIDATE_WINDOW:
                pass
            elif probed * DENSE_WALK >= CANDIDATE_WINDOW * walked:  # the rest within DENSE_WALK, likely
                plan = "key"
            elif probed and probed * (high + 1) <= SPARSE_MATCHES * walked:  # few matches below, likely
                high = await newest(0, high, "gin")
        while len(found) < CANDIDATE_WINDOW and high >= 0:
            # The next range: long enough for the rest at the density seen so far (with a wide margin
            # while that is the probe's), or four times longer; through the primary key, at most
            # DENSE_WALK (a filter joined by hash reads the whole range before it sorts).
            density = len(found) / (top - high)
            margin = 2 if size == 0 else 1.25
            needed = (CANDIDATE_WINDOW - len(found)) / density * margin if density else size * 4
            size = max(FIRST_RANGE, int(needed)) if plan != "key" else min(DENSE_WALK, int(needed))
            high = await newest(max(high - size + 1, 0), high, plan)
        await planned("ranges")  # the rest of the search plans as the planner chooses
        if not found:
            return None, found
        return _Window(found[0].id, found[-1].id if len(found) >= CANDIDATE_WINDOW else 0), found

    async def search(
        self, text: str, filters: SearchFilters, *, limit: int, cursor: str | None
    ) -> tuple[list[Hit], str | None]:
        """The utterances matching ``text`` (see ``service.fulltext.query``): window by window, newest
        first, each window's matches most relevant first, then newest. A window is the
        ``CANDIDATE_WINDOW`` newest matches below the previous one, so ranking costs the same however
        many utterances match; with fewer matches than that, the whole result is one window. Keyset
        pagination on (window, relevance, time, id): results inserted meanwhile never make a later page
        skip or repeat one."""
        query = parse_query(text)
        after = _Position.decode(cursor) if cursor else None
        window = after.window if after else None
        rows: list[tuple[_Window, Row[Any]]] = []
        async with self._db.read() as session:
            await plan_each_search(session)
            top = await session.scalar(select(func.max(UTTERANCE.c.id)))
            if top is None:  # nothing indexed yet
                return [], None
            filters = await self._narrowed(session, query, filters, top)
            while True:
                if window is not None:  # pinned by the cursor
                    found = self.ranked(query, filters, window).subquery("found")
                    position = after if after is not None and after.window == window else None
                    found_rows = (await session.execute(_page(found, limit + 1 - len(rows), position))).all()
                else:
                    window, found_rows = await self._next_window(session, query, filters, top, limit + 1 - len(rows))
                    if window is None:
                        break
                rows += [(window, row) for row in found_rows]
                if len(rows) > limit or window.last:
                    break
                top, window = window.bottom - 1, None
            next_cursor = None
            if len(rows) > limit:
                rows = rows[:limit]
                window, last = rows[-1]
                next_cursor = _Position(window, last.relevance, last.occurred_at, last.id).encode()
            offsets = await _recording_offsets(session, [row for _, row in rows])
        hits = [
            Hit(
                row.call_id,
                row.seq,
                row.role,
                row.text,
                highlighted(row.highlight),
                row.occurred_at,
                offsets.get((row.call_id, row.seq)),
            )
            for _, row in rows
        ]
        return hits, next_cursor


# A ceiling not known yet (None: the call stored events since it was last settled) counts as this.
_UNKNOWN_CEILING = 2**62


def _highest_ceiling(ceilings: Select[Any] | None) -> Select[Any]:
    """The highest of the ``utterance_ceiling`` that ``ceilings`` selects (an unknown one: no bound)."""
    assert ceilings is not None
    return select(func.max(func.coalesce(ceilings.subquery().c.utterance_ceiling, _UNKNOWN_CEILING)))


async def _count(session: AsyncSession, query: Select[Any], most: int) -> int:
    """How many rows ``query`` gives, counting at most ``most + 1``."""
    return await session.scalar(select(func.count()).select_from(query.limit(most + 1).subquery())) or 0


def _walk_order(row_id: ColumnElement[int], filters: SearchFilters) -> ColumnElement[int]:
    """What a window's newest matches are sorted by: the id, as an expression when the filters picked few
    calls (not the primary key's order, which the planner would walk instead of those calls' utterances)."""
    return row_id + 0 if filters.calls is not None else row_id


def _page(found: Subquery, limit: int, after: _Position | None = None) -> Select[Any]:
    """A window's matches (``found``), most relevant first, then newest, after ``after``."""
    page = select(found).order_by(found.c.relevance.desc(), found.c.occurred_at.desc(), found.c.id.desc())
    if after is not None:
        position = (after.relevance, after.occurred_at, after.row_id)
        page = page.where(tuple_(found.c.relevance, found.c.occurred_at, found.c.id) < position)
    return page.limit(limit)


async def _recording_offsets(session: AsyncSession, rows: Sequence[Row[Any]]) -> dict[tuple[str, int], float | None]:
    """Where each utterance of a page begins in its call's recording (two reads for the whole page)."""
    if not rows:
        return {}
    call_ids = sorted({row.call_id for row in rows})
    segments: dict[str, list[SegmentClock]] = {}
    byte_rates: dict[str, int] = {}
    answered: dict[str, dt.datetime | None] = {}
    recorded = (
        select(
            _RECORDING.c.call_id,
            _RECORDING.c.sample_rate,
            _RECORDING.c.channels,
            _CALL.c.started_at,
            _SEGMENT.c.started_at,
            _SEGMENT.c.bytes,
            _SEGMENT.c.gap_before_bytes,
        )
        .join(_SEGMENT, _SEGMENT.c.recording_id == _RECORDING.c.id)
        .join(_CALL, _CALL.c.id == _RECORDING.c.call_id)
        .where(_RECORDING.c.call_id.in_(call_ids))
        .order_by(_RECORDING.c.call_id, _SEGMENT.c.index)
    )
    for call_id, sample_rate, channels, answered_at, started_at, size, gap in await session.execute(recorded):
        byte_rates[call_id], answered[call_id] = sample_rate * channels * SAMPLE_BYTES, answered_at
        segments.setdefault(call_id, []).append(SegmentClock(started_at, size, gap))
    with_audio = [row for row in rows if row.call_id in segments]
    if not with_audio:
        return {}
    # The speech updates shortly before each utterance: one range of the (call_id, seq) key per hit.
    windows = or_(
        *(
            and_(_EVENT.c.call_id == row.call_id, _EVENT.c.seq.between(row.seq - SPEECH_WINDOW_EVENTS, row.seq))
            for row in with_audio
        )
    )
    updates: dict[str, list[SpeechUpdate]] = {}
    nearby = select(_EVENT.c.call_id, _EVENT.c.seq, _EVENT.c.occurred_at, _EVENT.c.payload).where(
        _EVENT.c.type == "speech-update", windows
    )
    for call_id, seq, occurred_at, payload in await session.execute(nearby):
        updates.setdefault(call_id, []).append(SpeechUpdate(seq, occurred_at, payload))
    return {
        (row.call_id, row.seq): recording_offset(
            speech_start(row.role, row.seq, row.occurred_at, updates.get(row.call_id, ())),
            segments[row.call_id],
            byte_rate=byte_rates[row.call_id],
            answered_at=answered[row.call_id],
        )
        for row in with_audio
    }
