"""The timeline keeps Vapi's call object where it is news, not in every event."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.testing import AsyncTestClient

from service.calls.compact import timeline_message
from tests.webhooks.test_receiver import client, message, post

__all__ = ["client"]  # the receiver's fixture, shared

CALL = {"id": "call-1", "assistant": {"model": {"messages": [{"role": "system", "content": "x" * 1000}]}}}


def test_events_that_do_not_move_the_call_keep_only_its_id() -> None:
    transcript = {"type": "transcript", "role": "user", "transcript": "hi", "call": CALL}
    assert timeline_message(transcript, status_changed=False) == {**transcript, "call": {"id": "call-1"}}
    assert transcript["call"] is CALL, "the message itself is left alone"


def test_events_that_move_the_call_keep_it_whole() -> None:
    for kind in ("status-update", "end-of-call-report"):
        kept = {"type": kind, "call": CALL}
        assert timeline_message(kept, status_changed=False) is kept
    hang = {"type": "hang", "call": CALL}
    assert timeline_message(hang, status_changed=True) is hang


def test_messages_without_a_call_object_are_stored_as_they_came() -> None:
    for odd in ({"type": "transcript"}, {"type": "transcript", "call": "call-1"}):
        assert timeline_message(odd, status_changed=False) is odd
    assert timeline_message({"type": "transcript", "call": {"x": 1}}, status_changed=False)["call"] == {}


async def test_the_timeline_stores_the_call_object_once_per_change(client: AsyncTestClient[Any]) -> None:
    bodies = [
        message("status-update", status="in-progress"),
        *(message("transcript", role="user", transcriptType="final", transcript=f"line {n}") for n in range(3)),
        message("end-of-call-report", endedReason="customer-ended-call"),
    ]
    for body in bodies:
        body["message"]["call"] |= CALL
        assert (await post(client, body)).status_code == 200
    events = (await client.get("/v1/calls/call-1/events")).json()["data"]
    vapi = [(event["type"], event["payload"]["call"]) for event in events if event["source"] == "vapi"]
    whole = {**bodies[0]["message"]["call"]}
    assert vapi == [
        ("status-update", whole),
        ("transcript", {"id": "call-1"}),
        ("transcript", {"id": "call-1"}),
        ("transcript", {"id": "call-1"}),
        ("end-of-call-report", whole),
    ]
    transcripts = [event for event in events if event["type"] == "transcript"]
    assert [event["payload"]["transcript"] for event in transcripts] == ["line 0", "line 1", "line 2"]
    assert all(len(msgspec.json.encode(event["payload"])) < 300 for event in transcripts)
    call = (await client.get("/v1/calls/call-1")).json()
    assert call["customer"] == {"number": "+14155550100"}, "what the call row keeps stays queryable"
