"""Call ids at the boundary: what Vapi can send, nothing that could misbehave in a key, path or header.

Vapi's call ids are UUIDs (the simulator's too). Switchboard accepts a little more, the shape of Vapi's
ids in general (letters, digits, ``-`` and ``_``, at most 64 characters: the column's width), and
refuses the rest with 400 wherever an id comes in: a webhook's ``message.call.id``, the import body,
every ``/v1/calls/{id}`` path. Such an id is safe as a storage key part (no ``.``, ``..`` or ``/``),
as a file name and in a header.
"""

from __future__ import annotations

import re
from typing import Annotated

from litestar.params import FromPath, Parameter

CALL_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
CALL_ID_EXAMPLE = "7420f27a-30fd-4f49-a995-5549ae7cc00d"
_CALL_ID = re.compile(CALL_ID_PATTERN)

# A ``/v1/calls/{call_id}`` path parameter: 400 (a problem document) when it is not a call id.
CallIdPath = FromPath[Annotated[str, Parameter(pattern=CALL_ID_PATTERN, description="The call's id (Vapi's: a UUID)")]]


def is_call_id(value: object) -> bool:
    """Whether ``value`` is a call id Switchboard accepts."""
    return isinstance(value, str) and _CALL_ID.fullmatch(value) is not None
