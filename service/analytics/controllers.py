"""HTTP surface of conversation analytics: one thin handler."""

from __future__ import annotations

from litestar import Controller, get
from litestar.di import NamedDependency

from service.analytics.service import AnalyticsService
from service.auth import scoped
from service.calls.analytics import AnalyticsDetail, analytics_detail
from service.calls.ids import CallIdPath

Analytics = NamedDependency[AnalyticsService]


class AnalyticsController(Controller):
    path = "/v1/calls/{call_id:str}/analytics"
    tags = ["calls"]

    @get(
        "/",
        operation_id="getCallAnalytics",
        summary="Who talked when: talk, silence, overlap and interruptions from the recorded audio",
        description=(
            "Computed by a voice activity detector over both channels of the recording once it is final: "
            "`pending` until then (and while it runs), `failed` with `error` when the audio cannot be analysed."
        ),
        **scoped("calls:read"),
    )
    async def get_analytics(self, call_id: CallIdPath, analytics: Analytics) -> AnalyticsDetail:
        return analytics_detail(await analytics.get(call_id))
