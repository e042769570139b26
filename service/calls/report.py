"""What Vapi reports about a finished call, kept on the call (contract section 10). Pure functions.

Vapi says it twice: in the ``end-of-call-report`` server message (``cost``, ``costs``, ``analysis``,
``artifact.structuredOutputs``; vapi-server-sdk 3.0.0 ``ServerMessageEndOfCallReport``) and in its Call
object (``GET /call/{id}``, and the ``call`` of every server message; SDK ``Call``). Either may be the
later word — the report is sent once, a call object fetched afterwards may carry revised costs — so the
figures are taken from whichever source Vapi wrote later (the report's ``timestamp``, the call's
``updatedAt``); ``call.reported_at`` keeps the time of the source taken. The call's identity (carrier,
its call id, squad and workflow) is taken whenever a source names it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from service.db.models import Call

# Call attribute ← key of the Call object, taken whenever present (not figures that change).
_IDENTITY = (
    ("ended_message", "endedMessage"),
    ("phone_call_provider", "phoneCallProvider"),
    ("phone_call_provider_id", "phoneCallProviderId"),
    ("squad_id", "squadId"),
    ("workflow_id", "workflowId"),
)


def figures(source: dict[str, Any]) -> dict[str, Any]:
    """The figures ``source`` (a report or a Call object) carries, as call attributes; absent ones left out."""
    found: dict[str, Any] = {}
    cost = source.get("cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        found["cost"] = float(cost)
    if isinstance(source.get("costs"), list):
        found["costs"] = [item for item in source["costs"] if isinstance(item, dict)]
    analysis = dict(source["analysis"]) if isinstance(source.get("analysis"), dict) else {}
    # Older reports carried the summary at the top level only.
    if "summary" not in analysis and isinstance(source.get("summary"), str):
        analysis["summary"] = source["summary"]
    if analysis:
        found["analysis"] = analysis
    artifact = source.get("artifact")
    if isinstance(artifact, dict) and isinstance(artifact.get("structuredOutputs"), dict):
        found["structured_outputs"] = dict(artifact["structuredOutputs"])
    return found


def merge_report(call: Call, source: dict[str, Any], *, written_at: dt.datetime | None) -> bool:
    """Take what ``source`` reports about the call unless Vapi wrote what the call holds later;
    ``written_at``: when Vapi wrote ``source``. An older or undated source only fills figures no source
    gave yet. Returns whether any figure was taken."""
    for attribute, key in _IDENTITY:
        value = source.get(key)
        if isinstance(value, str) and value and value != getattr(call, attribute):
            setattr(call, attribute, value)
    found = figures(source)
    if not found:
        return False
    later = written_at is not None and (call.reported_at is None or written_at >= call.reported_at)
    if not later:  # an older or undated source: it only fills what no source has said yet
        found = {attribute: value for attribute, value in found.items() if getattr(call, attribute) is None}
    for attribute, value in found.items():
        if value != getattr(call, attribute):
            setattr(call, attribute, value)
    if later and written_at != call.reported_at:
        call.reported_at = written_at
    return bool(found)


def summary(call: Call) -> str | None:
    """Vapi's summary of the call (``analysis.summary``), if it wrote one."""
    value = (call.analysis or {}).get("summary")
    return value if isinstance(value, str) else None
