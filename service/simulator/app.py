"""The simulator's HTTP surface: Vapi's REST API and control URLs, the listen socket, and ``/_sim`` admin."""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec
from litestar import Litestar, Request, Response, asgi, delete, get, post, put
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, QueryParameter

from service.simulator.calls import iso, validate_create_call
from service.simulator.listen import ListenEndpoint
from service.simulator.script import CallScript, Utterance
from service.simulator.simulator import VapiSimulator, vapi_error

AnyRequest = Request[Any, Any, Any]
S = TypeVar("S", bound=msgspec.Struct)


def _simulator(request: AnyRequest) -> VapiSimulator:
    sim = request.app.state["simulator"]
    assert isinstance(sim, VapiSimulator)
    return sim


def _json(content: Any, status: int = 200) -> Response[Any]:
    return Response(content=content, status_code=status, media_type="application/json")


def _base_url(request: AnyRequest) -> str:
    return str(request.base_url).rstrip("/")


async def _decode_json(request: AnyRequest) -> tuple[Any, bool]:
    raw = await request.body()
    if not raw.strip():
        return None, True
    try:
        return msgspec.json.decode(raw), True
    except msgspec.DecodeError:
        return None, False


def _log_rest(
    sim: VapiSimulator, request: AnyRequest, status: int, body: Any, response: Any, call_id: str | None
) -> None:
    sim.log.add(
        "rest",
        call_id,
        method=request.method,
        path=request.url.path,
        status=status,
        request=body,
        response=response,
    )
    sim.notify()


async def _rest_refusal(sim: VapiSimulator, request: AnyRequest) -> tuple[int, dict[str, Any]] | None:
    if not sim.check_api_key(request.headers.get("authorization")):
        return 401, vapi_error(
            401,
            "Invalid Key. Hot tip, you may be using the private key instead of the public key, or vice versa.",
        )
    fault = sim.take_rest_fault()
    if fault is not None:
        if fault.delay > 0:
            await asyncio.sleep(fault.delay)
        if fault.status is not None:
            return fault.status, vapi_error(fault.status, "injected fault")
    return None


# -- Vapi REST API -----------------------------------------------------------------------------------


def _millis(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


async def _create_call(request: AnyRequest) -> Response[Any]:
    sim = _simulator(request)
    body, valid = await _decode_json(request)
    refusal = await _rest_refusal(sim, request)
    if refusal is None and not valid:
        refusal = 400, vapi_error(400, ["body must be valid JSON"])
    if refusal is None and sim.closing:
        refusal = 503, vapi_error(503, "shutting down")
    if refusal is None:
        errors = validate_create_call(body, phone=True)
        if errors and not sim.strict_properties:
            errors = [e for e in errors if not e.startswith("property ")]
        if errors:
            refusal = 400, vapi_error(400, errors)
    if refusal is not None:
        status, error = refusal
        _log_rest(sim, request, status, body, error, None)
        return _json(error, status)
    assert isinstance(body, dict)
    call = sim.place_call(body, base_url=_base_url(request))
    rendered = call.to_vapi()
    _log_rest(sim, request, 201, body, rendered, call.id)
    return _json(rendered, 201)


@post("/call", operation_id="simCreateCall")
async def create_call(request: AnyRequest) -> Response[Any]:
    """``POST /call``: place an outbound phone call."""
    return await _create_call(request)


@post("/call/phone", operation_id="simCreatePhoneCall")
async def create_phone_call(request: AnyRequest) -> Response[Any]:
    """Legacy ``POST /call/phone``: same as ``POST /call``."""
    return await _create_call(request)


@get("/call/{call_id:str}", operation_id="simGetCall")
async def get_call(request: AnyRequest, call_id: FromPath[str]) -> Response[Any]:
    """``GET /call/{id}``: the call as it is now."""
    sim = _simulator(request)
    refusal = await _rest_refusal(sim, request)
    call = sim.calls.get(call_id) if call_id not in sim.deleted else None
    if refusal is None and call is None:
        refusal = 404, vapi_error(404, "Call not found")
    if refusal is not None:
        status, error = refusal
        _log_rest(sim, request, status, None, error, call_id)
        return _json(error, status)
    assert call is not None
    rendered = call.to_vapi()
    _log_rest(sim, request, 200, None, {"status": rendered["status"]}, call_id)
    return _json(rendered)


@delete("/call/{call_id:str}", operation_id="simDeleteCall", status_code=200)
async def delete_call(request: AnyRequest, call_id: FromPath[str]) -> Response[Any]:
    """``DELETE /call/{id}``: the call's data is deleted (an ended call only); answers the call."""
    sim = _simulator(request)
    refusal = await _rest_refusal(sim, request)
    call = sim.calls.get(call_id) if call_id not in sim.deleted else None
    if refusal is None and call is None:
        refusal = 404, vapi_error(404, "Call not found")
    if refusal is None and call is not None and not call.ended:
        refusal = 400, vapi_error(400, "Call is still active")
    if refusal is not None:
        status, error = refusal
        _log_rest(sim, request, status, None, error, call_id)
        return _json(error, status)
    assert call is not None
    sim.deleted.add(call_id)
    _log_rest(sim, request, 200, None, {"deleted": True}, call_id)
    return _json(call.to_vapi())


async def _stored_object(
    request: AnyRequest, kind: str, store: dict[str, dict[str, Any]], object_id: str
) -> Response[Any]:
    sim = _simulator(request)
    refusal = await _rest_refusal(sim, request)
    found = store.get(object_id)
    if refusal is None and found is None:
        refusal = 404, vapi_error(404, f"Couldn't Find {kind}")
    if refusal is not None:
        status, error = refusal
        _log_rest(sim, request, status, None, error, None)
        return _json(error, status)
    # Assistant and the PhoneNumber models (vapi-server-sdk 3.0.0) require id, orgId, createdAt, updatedAt.
    stamp = iso(sim.started_at)
    rendered = {"id": object_id, "orgId": sim.org_id, "createdAt": stamp, "updatedAt": stamp, **(found or {})}
    _log_rest(sim, request, 200, None, {"id": object_id}, None)
    return _json(rendered)


@get("/assistant/{assistant_id:str}", operation_id="simGetAssistant")
async def get_assistant(request: AnyRequest, assistant_id: FromPath[str]) -> Response[Any]:
    """``GET /assistant/{id}``: a stored assistant (vapi-server-sdk ``Assistant``: ``server``,
    ``serverMessages``, ``monitorPlan``…) as configured in ``VapiSimulator.assistants``."""
    return await _stored_object(request, "Assistant", _simulator(request).assistants, assistant_id)


@get("/phone-number/{phone_number_id:str}", operation_id="simGetPhoneNumber")
async def get_phone_number(request: AnyRequest, phone_number_id: FromPath[str]) -> Response[Any]:
    """``GET /phone-number/{id}``: a stored phone number (``TwilioPhoneNumber``… with ``server``)."""
    return await _stored_object(request, "Phone Number", _simulator(request).phone_numbers, phone_number_id)


@get("/call/{call_id:str}/stereo-recording", operation_id="simStereoRecording")
async def stereo_recording(request: AnyRequest, call_id: FromPath[str]) -> Response[Any]:
    """``GET /call/{id}/stereo-recording`` (vapi-server-sdk 3.0.0
    ``calls.call_artifact_controller_stereo_recording_download``): a redirect to a freshly signed URL of
    the call's stereo recording, also when the report's URL has expired."""
    sim = _simulator(request)
    refusal = await _rest_refusal(sim, request)
    call = sim.calls.get(call_id) if call_id not in sim.deleted else None
    if refusal is None and (call is None or not call.ended):
        refusal = 404, vapi_error(404, "Recording not found")
    if refusal is not None:
        status, error = refusal
        _log_rest(sim, request, status, None, error, call_id)
        return _json(error, status)
    _log_rest(sim, request, 302, None, None, call_id)
    location = f"/recordings/{call_id}-stereo.wav?X-Amz-Signature={secrets.token_hex(8)}"
    return Response(content=b"", status_code=302, headers={"Location": location})


@get("/recordings/{name:str}", operation_id="simRecordingFile")
async def recording_file(request: AnyRequest, name: FromPath[str]) -> Response[Any]:
    """Vapi's recording storage: the stereo WAV of an ended call (``artifact.stereoRecordingUrl``); 403 once
    the unsigned URL has expired (``VapiSimulator.expire_recording_url``), as S3 refuses it."""
    sim = _simulator(request)
    call = sim.calls.get(name.removesuffix("-stereo.wav")) if name.endswith("-stereo.wav") else None
    if call is None or not call.ended or call.id in sim.deleted:
        return Response(content=b"<Error><Code>NoSuchKey</Code></Error>", status_code=404, media_type="application/xml")
    if call.recording_url_expired and "X-Amz-Signature" not in request.query_params:
        return Response(
            content=b"<Error><Code>AccessDenied</Code></Error>", status_code=403, media_type="application/xml"
        )
    wav = call.stereo_wav()
    _log_rest(sim, request, 200, None, {"bytes": len(wav)}, call.id)
    return Response(content=wav, status_code=200, media_type="audio/wav")


# ``GET /call``'s createdAt filters (vapi-server-sdk 3.0.0 ``calls.list``) and how each compares.
CREATED_AT_FILTERS = {
    "createdAtGt": lambda created, bound: created > bound,
    "createdAtGe": lambda created, bound: created >= bound,
    "createdAtLt": lambda created, bound: created < bound,
    "createdAtLe": lambda created, bound: created <= bound,
}


@get("/call", operation_id="simListCalls")
async def list_calls(request: AnyRequest, limit: FromQuery[int] = 100) -> Response[Any]:
    """``GET /call``: calls, newest first; filtered by ``id``, ``assistantId``, ``phoneNumberId`` and the
    ``createdAt{Gt,Ge,Lt,Le}`` bounds (ISO 8601), as the SDK's ``calls.list`` sends them."""
    sim = _simulator(request)
    refusal = await _rest_refusal(sim, request)
    bounds = {}
    for name in CREATED_AT_FILTERS:
        if (raw := request.query_params.get(name)) is not None and refusal is None:
            try:
                bounds[name] = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                refusal = 400, vapi_error(400, [f"{name} must be an ISO 8601 date"])
    if refusal is not None:
        status, error = refusal
        _log_rest(sim, request, status, None, error, None)
        return _json(error, status)
    kept = [call for call in sim.calls.values() if call.id not in sim.deleted]
    for key, value in (("id", "id"), ("assistantId", "assistantId"), ("phoneNumberId", "phoneNumberId")):
        if (wanted := request.query_params.get(key)) is not None:
            kept = [call for call in kept if (call.id if value == "id" else call.request.get(value)) == wanted]
    for name, bound in bounds.items():
        # Vapi's createdAt has millisecond precision: compare what it shows.
        kept = [call for call in kept if CREATED_AT_FILTERS[name](_millis(call.created_at), bound)]
    calls = sorted(kept, key=lambda c: c.created_at, reverse=True)[: max(0, limit)]
    _log_rest(sim, request, 200, None, {"count": len(calls)}, None)
    return _json([call.to_vapi() for call in calls])


@post("/{call_id:str}/control", operation_id="simControl")
async def control(request: AnyRequest, call_id: FromPath[str]) -> Response[Any]:
    """A call's control URL."""
    sim = _simulator(request)
    status, body = await sim.receive_control(call_id, await request.body(), request.headers.get("authorization"))
    return _json(body, status)


# -- /_sim admin surface (for other processes, e.g. benchmarks) -------------------------------------


class DropListen(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Body of ``POST /_sim/calls/{id}/drop-listen``."""

    after_frames: int = 0
    close_code: int | None = None


class RefuseListen(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Body of ``POST /_sim/calls/{id}/refuse-listen`` (call id ``*``: every call)."""

    seconds: float = 0.0
    count: int = 0
    status: int = 503


class StallListen(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Body of ``POST /_sim/calls/{id}/stall-listen``."""

    seconds: float


class EndCall(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Body of ``POST /_sim/calls/{id}/end``."""

    ended_reason: str = "manually-canceled"


class ControlFaultBody(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Body of ``POST /_sim/faults/control``."""

    call_id: str | None = None
    delay: float = 0.0
    status: int | None = None
    count: int | None = None


class WebhookFaultBody(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Body of ``POST /_sim/faults/webhooks``."""

    call_id: str | None = None
    types: list[str] | None = None
    count: int | None = None


class RestFaultBody(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """Body of ``POST /_sim/faults/rest``."""

    delay: float = 0.0
    status: int | None = None
    count: int | None = None


class UtteranceBody(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """One turn of a script."""

    role: str
    text: str
    at: float
    duration: float | None = None


class ScriptBody(msgspec.Struct, rename="camel", forbid_unknown_fields=True, omit_defaults=True):
    """Body of ``PUT /_sim/script``: fields to change in the default script of new calls."""

    ring_after: float | None = None
    answer_after: float | None = None
    talk_seconds: float | None = None
    ended_reason: str | None = None
    turns: list[UtteranceBody] | None = None
    answer: bool | None = None
    no_answer_after: float | None = None
    hang_at: float | None = None
    partial_transcripts: bool | None = None
    send_queued_status: bool | None = None


async def _decode_body(request: AnyRequest, struct: type[S]) -> S | Response[Any]:
    raw = await request.body()
    try:
        return msgspec.json.decode(raw or b"{}", type=struct)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return _json({"error": str(exc)}, 400)


def _known_call(sim: VapiSimulator, call_id: str) -> Response[Any] | None:
    return None if call_id in sim.calls else _json({"error": "unknown call"}, 404)


@get("/_sim/log", operation_id="simLog")
async def sim_log(
    request: AnyRequest,
    call_id: Annotated[str | None, QueryParameter(name="callId")] = None,
    kind: Annotated[str | None, QueryParameter()] = None,
    after_seq: Annotated[int, QueryParameter(name="afterSeq")] = 0,
) -> Response[Any]:
    """The log (query ``callId``, ``kind``, ``afterSeq``) and listen-connection summaries."""
    sim = _simulator(request)
    entries = [
        e.to_json()
        for e in sim.log.entries
        if e.seq > after_seq and (call_id is None or e.call_id == call_id) and (kind is None or e.kind == kind)
    ]
    records = [r.to_json() for cid, rs in sim.log.listen.items() if call_id in (None, cid) for r in rs]
    return _json({"entries": entries, "listen": records})


@delete("/_sim/log", operation_id="simClearLog", status_code=204)
async def sim_clear_log(request: AnyRequest) -> None:
    """Forget the log so far."""
    _simulator(request).log.clear()


@get("/_sim/calls", operation_id="simCalls")
async def sim_calls(request: AnyRequest) -> Response[Any]:
    """Every call with its status and listen summary."""
    sim = _simulator(request)
    return _json(
        [
            {
                "id": call.id,
                "status": call.status,
                "endedReason": call.ended_reason,
                "listeners": len(call.connections),
                "endFrame": call.end_frame,
                "listen": [r.to_json() for r in sim.listen_records(call.id)],
            }
            for call in sim.calls.values()
        ]
    )


@post("/_sim/calls/{call_id:str}/drop-listen", operation_id="simDropListen", status_code=200)
async def sim_drop_listen(request: AnyRequest, call_id: FromPath[str]) -> Response[Any]:
    """Drop the call's listen sockets (now or after N frames; abort, or close with a code)."""
    sim = _simulator(request)
    if (missing := _known_call(sim, call_id)) is not None:
        return missing
    body = await _decode_body(request, DropListen)
    if isinstance(body, Response):
        return body
    count = sim.drop_listen(call_id, after_frames=body.after_frames, close_code=body.close_code)
    return _json({"connections": count})


@post("/_sim/calls/{call_id:str}/refuse-listen", operation_id="simRefuseListen", status_code=200)
async def sim_refuse_listen(request: AnyRequest, call_id: FromPath[str]) -> Response[Any]:
    """Refuse the call's (``*``: every call's) listen handshakes for a while or a number of attempts."""
    sim = _simulator(request)
    if call_id != "*" and (missing := _known_call(sim, call_id)) is not None:
        return missing
    body = await _decode_body(request, RefuseListen)
    if isinstance(body, Response):
        return body
    sim.refuse_listen(None if call_id == "*" else call_id, seconds=body.seconds, count=body.count, status=body.status)
    return _json({"ok": True})


@post("/_sim/calls/{call_id:str}/stall-listen", operation_id="simStallListen", status_code=200)
async def sim_stall_listen(request: AnyRequest, call_id: FromPath[str]) -> Response[Any]:
    """Listen sockets of the call (``*``: every call) send nothing for a while."""
    sim = _simulator(request)
    if call_id != "*" and (missing := _known_call(sim, call_id)) is not None:
        return missing
    body = await _decode_body(request, StallListen)
    if isinstance(body, Response):
        return body
    sim.stall_listen(None if call_id == "*" else call_id, body.seconds)
    return _json({"ok": True})


@post("/_sim/calls/{call_id:str}/end", operation_id="simEndCall", status_code=200)
async def sim_end_call(request: AnyRequest, call_id: FromPath[str]) -> Response[Any]:
    """End a live call now."""
    sim = _simulator(request)
    if (missing := _known_call(sim, call_id)) is not None:
        return missing
    body = await _decode_body(request, EndCall)
    if isinstance(body, Response):
        return body
    sim.end_call(call_id, body.ended_reason)
    return _json({"ok": True})


@post("/_sim/faults/control", operation_id="simControlFault", status_code=200)
async def sim_control_fault(request: AnyRequest) -> Response[Any]:
    """Make control requests slow and/or failing."""
    sim = _simulator(request)
    body = await _decode_body(request, ControlFaultBody)
    if isinstance(body, Response):
        return body
    sim.set_control_fault(body.call_id, delay=body.delay, status=body.status, count=body.count)
    return _json({"ok": True})


@post("/_sim/faults/webhooks", operation_id="simWebhookFault", status_code=200)
async def sim_webhook_fault(request: AnyRequest) -> Response[Any]:
    """Make server-message delivery fail."""
    sim = _simulator(request)
    body = await _decode_body(request, WebhookFaultBody)
    if isinstance(body, Response):
        return body
    sim.set_webhook_fault(body.call_id, types=body.types, count=body.count)
    return _json({"ok": True})


@post("/_sim/faults/rest", operation_id="simRestFault", status_code=200)
async def sim_rest_fault(request: AnyRequest) -> Response[Any]:
    """Make the REST API slow and/or failing."""
    sim = _simulator(request)
    body = await _decode_body(request, RestFaultBody)
    if isinstance(body, Response):
        return body
    sim.set_rest_fault(delay=body.delay, status=body.status, count=body.count)
    return _json({"ok": True})


@delete("/_sim/faults", operation_id="simClearFaults", status_code=204)
async def sim_clear_faults(request: AnyRequest) -> None:
    """Remove every injected fault."""
    _simulator(request).clear_faults()


@put("/_sim/script", operation_id="simSetScript")
async def sim_set_script(request: AnyRequest) -> Response[Any]:
    """Change the default script of calls placed from now on."""
    sim = _simulator(request)
    body = await _decode_body(request, ScriptBody)
    if isinstance(body, Response):
        return body
    sim.script = apply_script_changes(sim.script, msgspec.structs.asdict(body))
    return _json(script_to_json(sim.script))


def apply_script_changes(script: CallScript, changes: Mapping[str, Any]) -> CallScript:
    """``script`` with the given (non-None) fields replaced."""
    updates = {key: value for key, value in changes.items() if value is not None}
    if "turns" in updates:
        updates["turns"] = tuple(
            Utterance("user" if turn.role == "user" else "assistant", turn.text, turn.at, turn.duration)
            for turn in updates["turns"]
        )
    return dataclasses.replace(script, **updates)


def script_to_json(script: CallScript) -> dict[str, Any]:
    """A JSON-able form of a script."""
    data = dataclasses.asdict(script)
    data["turns"] = [dataclasses.asdict(turn) for turn in script.turns]
    return data


# -- the app -----------------------------------------------------------------------------------------


@asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    sim = app.state["simulator"]
    assert isinstance(sim, VapiSimulator)
    await sim.start()
    try:
        yield
    finally:
        await sim.aclose()


def build_app(sim: VapiSimulator) -> Litestar:
    """The ASGI application serving ``sim``."""
    listen = ListenEndpoint(sim)

    @asgi("/{call_id:str}/listen", copy_scope=False)
    async def listen_socket(scope: Any, receive: Any, send: Any) -> None:
        await listen(scope, receive, send)

    @asgi("/{call_id:str}/transport", copy_scope=False)
    async def legacy_listen_socket(scope: Any, receive: Any, send: Any) -> None:
        await listen(scope, receive, send)

    return Litestar(
        route_handlers=[
            create_call,
            create_phone_call,
            get_call,
            delete_call,
            list_calls,
            stereo_recording,
            recording_file,
            get_assistant,
            get_phone_number,
            control,
            listen_socket,
            legacy_listen_socket,
            sim_log,
            sim_clear_log,
            sim_calls,
            sim_drop_listen,
            sim_refuse_listen,
            sim_stall_listen,
            sim_end_call,
            sim_control_fault,
            sim_webhook_fault,
            sim_rest_fault,
            sim_clear_faults,
            sim_set_script,
        ],
        state=State({"simulator": sim}),
        lifespan=[_lifespan],
        openapi_config=None,
        logging_config=None,  # leave the host process's logging alone
        debug=False,
    )
