"""The analytics API contract (msgspec Structs, camelCase on the wire)."""

from __future__ import annotations

import msgspec

from service.db.models import CallAnalytics


class ChannelTalk(msgspec.Struct, rename="camel"):
    talk_seconds: float | None
    silence_seconds: float | None


class Interruptions(msgspec.Struct):
    """``customer``: the customer started while the assistant was talking; ``assistant``: the reverse."""

    customer: int | None
    assistant: int | None


class AnalyticsOut(msgspec.Struct, rename="camel"):
    """Who talked when, measured from the recording once it is final (null numbers until ``completed``).
    ``longestSilenceSeconds``: neither talking, between the answer and the end (lost audio is not
    silence); ``talkRatio``: customer talk over assistant talk."""

    status: str  # pending | completed | failed
    customer: ChannelTalk
    assistant: ChannelTalk
    overlap_seconds: float | None
    longest_silence_seconds: float | None
    interruptions: Interruptions
    talk_ratio: float | None


class AnalyticsDetail(AnalyticsOut):
    """``GET /v1/calls/{id}/analytics``: the summary, the seconds of audio heard, each side's stretches of
    talk (``[start, end]`` seconds into ``recording.wav``), and why it failed."""

    analyzed_seconds: float | None = None
    activity: dict[str, list[list[float]]] = msgspec.field(default_factory=dict)
    error: str | None = None


def analytics_out(row: CallAnalytics | None) -> AnalyticsOut:
    """The summary a call carries (``pending`` while there is no analysis yet)."""
    if row is None:
        return AnalyticsOut(
            "pending", ChannelTalk(None, None), ChannelTalk(None, None), None, None, Interruptions(None, None), None
        )
    return AnalyticsOut(
        status=row.status,
        customer=ChannelTalk(row.customer_talk_seconds, row.customer_silence_seconds),
        assistant=ChannelTalk(row.assistant_talk_seconds, row.assistant_silence_seconds),
        overlap_seconds=row.overlap_seconds,
        longest_silence_seconds=row.longest_silence_seconds,
        interruptions=Interruptions(row.customer_interruptions, row.assistant_interruptions),
        talk_ratio=row.talk_ratio,
    )


def analytics_detail(row: CallAnalytics | None) -> AnalyticsDetail:
    summary = analytics_out(row)
    detail = AnalyticsDetail(**{field: getattr(summary, field) for field in AnalyticsOut.__struct_fields__})
    if row is not None:
        detail.analyzed_seconds = row.analyzed_seconds
        detail.activity = row.activity or {}
        detail.error = row.error
    return detail
