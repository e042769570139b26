"""Documenting the error answers in the OpenAPI document, in one place.

Every 4xx/5xx is a problem document (see ``errors``). Rather than repeat the same ``responses=`` on
every route, the generated document is completed once: each operation lists the problem answers it
can give (by what it is: a ``/v1`` route, one with a path parameter, one with a body, one that calls
Vapi), and Litestar's default 400 is re-described as a problem document.
"""

from __future__ import annotations

from litestar.openapi.spec import OpenAPI, OpenAPIMediaType, OpenAPIResponse, Operation, Reference, Schema
from litestar.openapi.spec.enums import OpenAPIType

from service.errors import PROBLEM_JSON

# Operations that call Vapi and so can answer 502/504.
CALLS_VAPI = frozenset({"createCall", "importCall", "sayInCall", "controlCall"})
# Operations that refuse when the state does not allow (not live, in flight, in use).
CONFLICTS = frozenset(
    {
        "createCall",
        "sayInCall",
        "controlCall",
        "createRule",
        "putRule",
        "deleteCall",  # live or on legal hold
        "downloadRecordingOgg",  # still being recorded
        "downloadRecordingWav",  # fill=vapi without a copy that lines up
    }
)
RANGED = frozenset(
    {
        "downloadRecordingPcm",
        "downloadRecordingWav",
        "downloadRecordingFlac",
        "downloadRecordingOgg",
        "downloadVapiRecording",
    }
)
# Operations that answer 503 when a dependency fails half-way (the work is finished later).
UNAVAILABLE = frozenset({"deleteCall", "receiveVapiWebhook"})

PROBLEM_SCHEMA = Schema(
    type=OpenAPIType.OBJECT,
    description="An RFC 9457 problem document.",
    required=["type", "title", "status", "detail"],
    properties={
        "type": Schema(type=OpenAPIType.STRING, format="uri"),  # type: ignore[arg-type]
        "title": Schema(type=OpenAPIType.STRING),
        "status": Schema(type=OpenAPIType.INTEGER),
        "detail": Schema(type=OpenAPIType.STRING),
    },
)
DESCRIPTIONS = {
    400: "Malformed request or failed validation",
    401: "Missing or unknown API key (or webhook secret)",
    403: "The key lacks the scope this route needs",
    404: "Not found",
    409: "Conflict with the current state (call not live, request still in flight, …)",
    413: "Request body larger than SWITCHBOARD_MAX_BODY_BYTES",
    416: "Range not satisfiable",
    422: "Semantically invalid input (bad cursor, reused Idempotency-Key, …)",
    500: "Unexpected error (logged; no details leak)",
    502: "Vapi answered with an error or could not be reached",
    503: "A dependency (storage, Vapi, the webhook writer) is unavailable; retry later",
    504: "Vapi did not answer in time",
}


def _problem(status: int) -> OpenAPIResponse:
    return OpenAPIResponse(
        description=DESCRIPTIONS[status],
        content={PROBLEM_JSON: OpenAPIMediaType(schema=Reference(ref="#/components/schemas/Problem"))},
    )


def _statuses(path: str, method: str, operation: Operation) -> set[int]:
    statuses = {400, 500}
    operation_id = operation.operation_id or ""
    if path.startswith("/v1/"):
        statuses |= {401, 403, 422}
    if path == "/webhooks/vapi":
        statuses |= {401}
    if "{" in path:
        statuses.add(404)
    if method in ("post", "put", "patch"):
        statuses.add(413)
    if operation_id in CALLS_VAPI:
        statuses |= {404, 502, 504}
    if operation_id in CONFLICTS:
        statuses.add(409)
    if operation_id in RANGED:
        statuses.add(416)
    if operation_id in UNAVAILABLE:
        statuses.add(503)
    return statuses


def document_problems(document: OpenAPI) -> None:
    """Add the problem answers to every operation of ``document`` (in place)."""
    assert document.components is not None
    schemas = document.components.schemas = dict(document.components.schemas or {})
    schemas["Problem"] = PROBLEM_SCHEMA
    for path, item in (document.paths or {}).items():
        for method in ("get", "put", "post", "delete", "patch"):
            operation = getattr(item, method, None)
            if not isinstance(operation, Operation) or path in ("/healthz", "/readyz", "/metrics"):
                continue
            responses = operation.responses = dict(operation.responses or {})
            for status in sorted(_statuses(path, method, operation)):
                responses[str(status)] = _problem(status)
            if operation.operation_id in RANGED and "200" in responses:
                ok = responses["200"]
                assert isinstance(ok, OpenAPIResponse)
                responses["206"] = OpenAPIResponse(description="The requested byte range", content=ok.content)
