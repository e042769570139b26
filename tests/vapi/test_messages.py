"""Facts about Vapi's server messages: qualified types, subscriptions, answers in each message's shape."""

from __future__ import annotations

from typing import Any

import pytest

from service.vapi.messages import FINAL_TRANSCRIPTS, base_type, error_answer, subscribed
from service.webhooks.service import dedupe_key


def test_a_qualified_type_is_its_base_type() -> None:
    assert base_type(FINAL_TRANSCRIPTS) == "transcript"
    assert base_type("status-update") == "status-update"


@pytest.mark.parametrize(
    ("subscription", "message", "wanted"),
    [
        ([FINAL_TRANSCRIPTS], {"type": "transcript", "transcriptType": "final"}, True),
        ([FINAL_TRANSCRIPTS], {"type": "transcript", "transcriptType": "partial"}, False),
        ([FINAL_TRANSCRIPTS], {"type": FINAL_TRANSCRIPTS, "transcriptType": "final"}, True),
        (["transcript"], {"type": "transcript", "transcriptType": "partial"}, True),
        (["status-update"], {"type": "speech-update"}, False),
        ([], {"type": "status-update"}, False),
    ],
)
def test_subscriptions_match_types_and_qualifiers(
    subscription: list[str], message: dict[str, Any], wanted: bool
) -> None:
    assert subscribed(subscription, message) is wanted


def test_an_error_answer_takes_the_messages_own_shape() -> None:
    tool_calls = {
        "type": "tool-calls",
        "toolWithToolCallList": [{"toolCall": {"id": "t1", "function": {"name": "lookup"}}}],
    }
    assert error_answer(tool_calls, "down") == {"results": [{"name": "lookup", "toolCallId": "t1", "error": "down"}]}
    assert error_answer({"type": "assistant-request"}, "down") == {"error": "down"}
    assert error_answer({"type": "transfer-destination-request"}, "down") == {"error": "down"}


def test_message_identity_ignores_presigned_urls_but_not_what_tells_messages_apart() -> None:
    def message(**fields: Any) -> dict[str, Any]:
        return {"type": "end-of-call-report", "timestamp": 1700000000000, "call": {"id": "c1"}, **fields}

    first = message(artifact={"presignedStereoUrl": "https://s3/a?sig=1"})
    again = message(artifact={"presignedStereoUrl": "https://s3/a?sig=2"})
    assert dedupe_key(first, b"1") == dedupe_key(again, b"2")
    started = {**message(status="started", role="user", turn=1), "type": "speech-update"}
    stopped = {**started, "status": "stopped"}
    assert dedupe_key(started, b"x") != dedupe_key(stopped, b"x")
    assert dedupe_key({"type": "hang", "call": {"id": "c1"}}, b"a") != dedupe_key({"type": "hang"}, b"b")
