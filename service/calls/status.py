"""The call status state machine (pure).

Vapi statuses in lifecycle order: scheduled → queued → ringing → in-progress → forwarding → ended.
Webhooks can arrive late or out of order, so a status only moves forward, with one exception: a
forwarded call can come back to ``in-progress`` (a transfer that returned). ``ended`` is final.
"""

from __future__ import annotations

from typing import Literal, get_args

CallStatus = Literal["scheduled", "queued", "ringing", "in-progress", "forwarding", "ended"]
ORDER: tuple[str, ...] = get_args(CallStatus)
RANK = {status: rank for rank, status in enumerate(ORDER)}
LIVE = frozenset({"queued", "ringing", "in-progress", "forwarding"})
ANSWERED = frozenset({"in-progress", "forwarding"})


def advance(current: str, incoming: str) -> str:
    """The status after ``incoming`` is reported for a call that is ``current``."""
    if current == "ended" or incoming not in RANK:
        return current
    if current not in RANK:
        return incoming
    if current == "forwarding" and incoming == "in-progress":
        return incoming
    return incoming if RANK[incoming] > RANK[current] else current


def is_live(status: str) -> bool:
    """Between being queued at Vapi and ending: monitor URLs are usable."""
    return status in LIVE
