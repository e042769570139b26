"""Transcript search against the real app and database: calls and utterances arrive as Vapi webhooks
(or listen-socket events, written by the listen journal)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from litestar.testing import AsyncTestClient

from service.app import create_app
from service.calls.changes import CallChanges
from service.calls.events import NewEvent
from service.db.engine import Database
from service.listen.journal import EventJournal
from service.search.index import TranscriptIndexer
from tests.conftest import ADMIN_KEY, WEBHOOK_SECRET, make_settings

_clock = itertools.count(1764150000000, 1000)


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    app = create_app(make_settings(database_url))
    async with AsyncTestClient(app) as test_client:
        test_client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        yield test_client


class Calls:
    """Feeds the app calls and what was said in them."""

    def __init__(self, client: AsyncTestClient[Any], db: Database) -> None:
        self.client = client
        self.db = db  # the test's own: the app's engine belongs to the test client's event loop

    async def webhook(self, call_id: str, kind: str, *, call: dict[str, Any] | None = None, **fields: Any) -> None:
        body = {
            "message": {
                "type": kind,
                "timestamp": next(_clock),
                "call": {"id": call_id, "type": "inboundPhoneCall", **(call or {})},
                **fields,
            }
        }
        response = await self.client.post(
            "/webhooks/vapi",
            content=msgspec.json.encode(body),
            headers={"X-Vapi-Secret": WEBHOOK_SECRET, "Content-Type": "application/json"},
        )
        assert response.status_code == 200, response.text

    async def start(self, call_id: str, *, assistant: str = "asst-1", **metadata: Any) -> None:
        await self.webhook(
            call_id, "status-update", status="in-progress", call={"assistantId": assistant, "metadata": metadata}
        )

    async def say(self, call_id: str, role: str, text: str, *, kind: str = "transcript", final: bool = True) -> None:
        """A transcript webhook."""
        await self.webhook(call_id, kind, role=role, transcriptType="final" if final else "partial", transcript=text)

    async def hear(self, call_id: str, role: str, text: str) -> None:
        """The listen-socket copy of a final transcript, written by the listen journal (whose changes
        reach the transcript index as the app's do)."""
        payload = {"type": "transcript", "role": role, "transcriptType": "final", "transcript": text}
        changes = CallChanges()
        changes.subscribe(TranscriptIndexer())
        journal = EventJournal(self.db, changes)
        journal.add(call_id, NewEvent("listen", "transcript", payload))
        assert await journal.flush(call_id)
        await journal.close()

    async def search(self, q: str, *, expect: int = 200, **params: Any) -> dict[str, Any]:
        response = await self.client.get("/v1/search/transcripts", params={"q": q, **params})
        assert response.status_code == expect, response.text
        body: dict[str, Any] = response.json()
        return body

    async def texts(self, q: str, **params: Any) -> list[str]:
        return [hit["text"] for hit in (await self.search(q, **params))["data"]]


@pytest.fixture
async def calls(client: AsyncTestClient[Any], database_url: str) -> AsyncIterator[Calls]:
    db = Database(database_url)
    yield Calls(client, db)
    await db.dispose()
