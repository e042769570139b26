"""HTTP surface of transcript search: one thin handler."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from service.auth import scoped
from service.calls.service import metadata_filters
from service.fulltext.query import QUERY_HELP
from service.search.schemas import TranscriptHit, TranscriptHitPage
from service.search.service import SearchFilters, SearchService

Search = NamedDependency[SearchService]


class SearchController(Controller):
    path = "/v1/search"
    tags = ["search"]

    @get(
        "/transcripts",
        operation_id="searchTranscripts",
        summary="Find what was said: final transcript utterances, best match first",
        description=(
            "Every final transcript utterance of every call (from webhooks and listen-socket frames, once "
            "each). Best match first among the newest 500 matches (relevance, then the newest first), then "
            "among the next older 500, and so on: a query matching fewer is ranked whole. "
            "`metadata.<key>=<value>` filters on the call's metadata as `GET /v1/calls` does. A query without "
            "words, or too long, is answered with 400."
        ),
        **scoped("calls:read"),
    )
    async def search_transcripts(
        self,
        request: Request[Any, Any, Any],
        search: Search,
        q: Annotated[str, QueryParameter(description=QUERY_HELP, min_length=1, max_length=500)],
        limit: Annotated[int, QueryParameter(ge=1, le=100, description="Page size")] = 20,
        cursor: Annotated[str | None, QueryParameter(description="nextCursor of the previous page")] = None,
        role: Annotated[Literal["user", "assistant"] | None, QueryParameter(description="Who said it")] = None,
        call_id: Annotated[str | None, QueryParameter(name="callId")] = None,
        assistant_id: Annotated[str | None, QueryParameter(name="assistantId")] = None,
        created_after: Annotated[dt.datetime | None, QueryParameter(name="createdAfter")] = None,
        created_before: Annotated[dt.datetime | None, QueryParameter(name="createdBefore")] = None,
    ) -> TranscriptHitPage:
        filters = SearchFilters(
            role, call_id, assistant_id, created_after, created_before, metadata_filters(request.query_params)
        )
        hits, next_cursor = await search.search(q, filters, limit=limit, cursor=cursor)
        return TranscriptHitPage(
            data=[
                TranscriptHit(
                    call_id=hit.call_id,
                    seq=hit.seq,
                    role=hit.role,
                    text=hit.text,
                    highlight=hit.highlight,
                    occurred_at=hit.occurred_at,
                    offset_seconds=hit.offset_seconds,
                )
                for hit in hits
            ],
            next_cursor=next_cursor,
        )
