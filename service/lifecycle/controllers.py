"""HTTP surface of the lifecycle: erasing a call, holding it."""

from __future__ import annotations

from litestar import delete, put
from litestar.di import NamedDependency
from litestar.params import JSONBody

from service.auth import scoped
from service.calls.ids import CallIdPath
from service.db.engine import Database
from service.lifecycle.erasure import Eraser
from service.lifecycle.holds import set_legal_hold
from service.lifecycle.schemas import LegalHoldIn, LegalHoldOut


@delete(
    "/v1/calls/{call_id:str}",
    operation_id="deleteCall",
    summary="Erase a call everywhere",
    description=(
        "Erases the call's row, timeline, firings, injections, metadata, recording objects in storage, and "
        "the idempotency records and outbound deliveries that carry it; then answers 404 everywhere. 409 "
        "while the call is live or on legal hold. A call.deleted event follows. If storage fails half-way, "
        "503: the erasure is finished by the next sweep (or a retried request)."
    ),
    tags=["calls"],
    status_code=204,
    **scoped("calls:delete"),
)
async def delete_call(call_id: CallIdPath, eraser: NamedDependency[Eraser]) -> None:
    await eraser.erase(call_id)


@put(
    "/v1/calls/{call_id:str}/legal-hold",
    operation_id="setLegalHold",
    summary="Put a call on legal hold, or lift the hold",
    description="A held call is never erased: DELETE answers 409 and the retention sweep skips it.",
    tags=["calls"],
    **scoped("admin"),
)
async def put_legal_hold(
    call_id: CallIdPath, data: JSONBody[LegalHoldIn], db: NamedDependency[Database]
) -> LegalHoldOut:
    await set_legal_hold(db, call_id, hold=data.hold, reason=data.reason)
    return LegalHoldOut(call_id=call_id, hold=data.hold, reason=data.reason)
