"""Where Vapi may report a call's monitor plan: the call's overrides, its assistant, the message's assistant."""

from __future__ import annotations

from typing import Any

import pytest

from service.calls.tracking import apply_message
from service.db.models import Call

AUTH = {"listenAuthenticationEnabled": True, "controlAuthenticationEnabled": True}


def _call() -> Call:
    return Call(id="c1", status="queued", customer={}, call_metadata={}, listen_auth=False, control_auth=False)


@pytest.mark.parametrize(
    ("vapi_call", "message_fields"),
    [
        ({"id": "c1", "assistantOverrides": {"monitorPlan": AUTH}}, {}),
        ({"id": "c1", "assistant": {"monitorPlan": AUTH}}, {}),
        ({"id": "c1"}, {"assistant": {"monitorPlan": AUTH}}),
    ],
)
def test_the_monitor_plan_is_read_wherever_vapi_reports_it(
    vapi_call: dict[str, Any], message_fields: dict[str, Any]
) -> None:
    call = _call()
    message = {"type": "status-update", "status": "ringing", "call": vapi_call, **message_fields}
    apply_message(call, message, vapi_call, None, "k")
    assert call.listen_auth is True
    assert call.control_auth is True
