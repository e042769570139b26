"""Concurrent webhooks share transactions (group commit) and each is still stored exactly once."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import httpx
import msgspec

from tests.conftest import ADMIN_KEY, WEBHOOK_SECRET
from tests.harness import served_app

_clock = itertools.count(1_800_000_000_000)


def body(call_id: str, kind: str = "speech-update", **fields: Any) -> bytes:
    return msgspec.json.encode(
        {"message": {"type": kind, "timestamp": next(_clock), "call": {"id": call_id}, **fields}}
    )


async def test_concurrent_webhooks_are_each_stored_once_in_order(database_url: str) -> None:
    headers = {"X-Vapi-Secret": WEBHOOK_SECRET, "Authorization": f"Bearer {ADMIN_KEY}"}
    bodies = [body(f"call-{n % 5}", status="started", role="user") for n in range(60)]
    duplicates = bodies[:10]  # delivered twice, concurrently with the first delivery
    async with (
        served_app(database_url) as served,
        httpx.AsyncClient(base_url=served.base_url, headers=headers) as client,
    ):
        answers = await asyncio.gather(*(client.post("/webhooks/vapi", content=raw) for raw in [*bodies, *duplicates]))
        assert all(answer.status_code == 200 for answer in answers)
        acks = [answer.json() for answer in answers]
        assert sum(ack["stored"] for ack in acks) == 60
        assert sum(ack["duplicate"] for ack in acks) == 10
        for n in range(5):
            events = (await client.get(f"/v1/calls/call-{n}/events", params={"source": "vapi"})).json()["data"]
            assert len(events) == 12, "every distinct message once"
        timeline = (await client.get("/v1/calls/call-0/events", params={"limit": 500})).json()["data"]
        assert [event["seq"] for event in timeline] == list(range(1, len(timeline) + 1)), "no gaps, no repeats"


async def test_a_batch_with_redeliveries_of_stored_webhooks_stores_only_the_new_ones(database_url: str) -> None:
    """Duplicates are left to the unique index first: its refusal re-applies the batch with a lookup."""
    headers = {"X-Vapi-Secret": WEBHOOK_SECRET, "Authorization": f"Bearer {ADMIN_KEY}"}
    earlier = [body(f"call-{n % 3}", status="started", role="user") for n in range(6)]
    later = [body(f"call-{n % 3}", status="stopped", role="user") for n in range(30)]
    async with (
        served_app(database_url) as served,
        httpx.AsyncClient(base_url=served.base_url, headers=headers) as client,
    ):
        first = [(await client.post("/webhooks/vapi", content=raw)).json() for raw in earlier]
        assert all(ack["stored"] for ack in first)
        answers = await asyncio.gather(*(client.post("/webhooks/vapi", content=raw) for raw in [*later, *earlier]))
        acks = [answer.json() for answer in answers]
        assert [ack["stored"] for ack in acks] == [True] * 30 + [False] * 6
        assert [ack["duplicate"] for ack in acks[30:]] == [True] * 6
        assert [ack["seq"] for ack in acks[30:]] == [ack["seq"] for ack in first], "the stored copy's seq"
        for n in range(3):
            timeline = (await client.get(f"/v1/calls/call-{n}/events", params={"source": "vapi"})).json()["data"]
            assert len(timeline) == 12, "2 earlier + 10 later, each once"
            everything = (await client.get(f"/v1/calls/call-{n}/events", params={"limit": 500})).json()["data"]
            assert [event["seq"] for event in everything] == list(range(1, len(everything) + 1))
