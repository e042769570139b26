"""What of a server message goes into the call's timeline (pure).

Vapi repeats the whole call object (``message.call``: the assistant's configuration, the phone
number, transport, costs; ~1 KB and more) in every server message. Stored as it came, each transcript
line or speech update carried its own copy. The call object is kept where it says something new: on
the messages that move the call (``status-update``, ``end-of-call-report``, and any message that
changed the stored call's status), whose copies form the call's history; every other event keeps
``call: {"id": …}``. Between two status changes a dropped copy differs from the kept ones in little
more than ``updatedAt`` and the running cost (the final figures come with ``end-of-call-report``), and
the call's own fields stay queryable on the call (``GET /v1/calls/{id}``).
"""

from __future__ import annotations

from typing import Any

# The messages whose call object is the call's state at a change of it: always stored whole.
KEEPS_CALL = frozenset({"status-update", "end-of-call-report"})


def timeline_message(message: dict[str, Any], *, status_changed: bool) -> dict[str, Any]:
    """``message`` as the timeline stores it: with its call object only where that object is news."""
    call = message.get("call")
    if status_changed or message.get("type") in KEEPS_CALL or not isinstance(call, dict):
        return message
    return {**message, "call": {"id": call["id"]} if "id" in call else {}}
