"""``VapiSimulator``: the state of the simulated Vapi (calls, log, faults) and its Python API for tests."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import msgspec

from service.simulator.audio import FrameSource
from service.simulator.calls import Delivery, SimCall, now_utc, resolve_delivery
from service.simulator.control import say_content, unwrap_control, validate_control
from service.simulator.faults import ANY_CALL, ControlFault, ListenFault, RestFault, WebhookFault
from service.simulator.lifecycle import END_CALL_REASON, CallRunner
from service.simulator.log import ListenRecord, SimulatorLog
from service.simulator.script import CallScript
from service.simulator.webhooks import HmacSigning, WebhookSender
from service.tasks import TaskOwner

T = TypeVar("T")

DEFAULT_WAIT = 10.0
WAIT_POLL = 0.01
SHUTDOWN_LISTEN_TIMEOUT = 2.0


class VapiSimulator:
    """A loopback imitation of Vapi: REST calls, listen sockets, control URLs, scripted server messages.

    Serve it with ``SimulatorServer`` (in-process) or ``run_simulator`` (CLI), which build its ASGI app
    (``app.build_app``). ``pace`` scales
    every scripted duration (pace=10: ten times faster than real time); fault durations stay real time.
    """

    def __init__(
        self,
        *,
        server_url: str | None = None,
        secret: str | None = None,
        api_key: str | None = None,
        public_key: str | None = None,
        pace: float = 1.0,
        script: CallScript | None = None,
        keep_audio: bool = True,
        http_client: httpx.AsyncClient | None = None,
        hmac_secret: str | None = None,
        base_url: str | None = None,
        org_id: str | None = None,
        audio_seed: int = 0,
        strict_properties: bool = True,
        webhook_grace: float = 2.0,
        hmac_signing: HmacSigning | None = None,
        bracketed_types: bool = False,
        assistants: dict[str, dict[str, Any]] | None = None,
        phone_numbers: dict[str, dict[str, Any]] | None = None,
        monitor_auth_required: bool = False,
    ) -> None:
        if pace <= 0:
            raise ValueError("pace must be positive")
        self.server_url = server_url
        self.secret = secret
        self.api_key = api_key
        self.public_key = public_key
        self.pace = pace
        self.script = script or CallScript()
        self.keep_audio = keep_audio
        self.hmac_secret = hmac_secret
        self.hmac_signing = hmac_signing
        self.bracketed_types = bracketed_types
        self.monitor_auth_required = monitor_auth_required
        """Every listen and control request needs the public key, whatever the call's monitor plan
        says (a plan set on the assistant or in the dashboard, which the call object does not show)."""
        self.assistants: dict[str, dict[str, Any]] = dict(assistants or {})
        """Stored assistants by id (``GET /assistant/{id}``): their ``server`` and ``serverMessages``
        decide where a call's messages go, as Vapi's do."""
        self.phone_numbers: dict[str, dict[str, Any]] = dict(phone_numbers or {})
        """Stored phone numbers by id (``GET /phone-number/{id}``): their ``server`` gets the messages
        of calls whose assistant has none, and an inbound call's ``assistant-request``."""
        self.base_url = base_url.rstrip("/") if base_url else None
        """Base URL (``http://host:port``) that monitor URLs are built from; set by ``SimulatorServer``."""
        self.org_id = org_id or str(uuid.uuid4())
        self.started_at = now_utc()
        self.strict_properties = strict_properties
        self.webhook_grace = webhook_grace
        self.calls: dict[str, SimCall] = {}
        self.deleted: set[str] = set()  # ids deleted through DELETE /call/{id}: gone from the REST API
        self.runners: dict[str, CallRunner] = {}
        self.log = SimulatorLog()
        self._senders: dict[str, WebhookSender] = {}
        self._frames = FrameSource(audio_seed)
        self._given_client = http_client
        self._client: httpx.AsyncClient | None = http_client
        self._runner_tasks = TaskOwner("sim-call")
        self._sender_tasks = TaskOwner("sim-webhooks")
        self._listen_faults: dict[str, ListenFault] = {}
        self._control_faults: dict[str, ControlFault] = {}
        self._webhook_faults: dict[str, WebhookFault] = {}
        self.rest_fault: RestFault | None = None
        self._changed = asyncio.Event()
        self._started = False
        self._closing = False

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def closing(self) -> bool:
        """True once shutdown has begun: new calls and listen connections are refused."""
        return self._closing

    async def start(self) -> None:
        """Create the webhook HTTP client (when none was given). Idempotent."""
        if self._started:
            return
        self._started = True
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(20.0))

    async def aclose(self) -> None:
        """Stop every call, close listen sockets (1001), flush webhooks for a moment, await every task."""
        if self._closing:
            return
        self._closing = True
        await self._runner_tasks.close()
        connections = [conn for call in self.calls.values() for conn in call.connections]
        for connection in connections:
            connection.stop("shutdown")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SHUTDOWN_LISTEN_TIMEOUT):
                for connection in connections:
                    await connection.finished.wait()
        for sender in self._senders.values():
            sender.close()
        await self._sender_tasks.close(grace=self.webhook_grace)
        if self._client is not None and self._given_client is None:
            await self._client.aclose()
            self._client = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def notify(self) -> None:
        """Wake everything waiting in ``wait_until``."""
        self._changed.set()
        self._changed = asyncio.Event()

    def _http_client(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("VapiSimulator not started")
        return self._client

    # -- calls ---------------------------------------------------------------------------------------

    def _new_call(
        self, request: dict[str, Any], *, base_url: str | None, call_id: str | None, inbound: bool
    ) -> SimCall:
        """The state of a new call for ``request`` (not started)."""
        return SimCall.create(
            request,
            org_id=self.org_id,
            script=self.script,
            delivery=self._delivery(request),
            http_base=self._base(base_url),
            ws_base="ws" + self._base(base_url).removeprefix("http"),
            frames=self._frames,
            call_id=call_id,
            inbound=inbound,
        )

    def place_call(
        self, request: dict[str, Any], *, base_url: str | None = None, call_id: str | None = None, inbound: bool = False
    ) -> SimCall:
        """Create a call for a (validated) create-call body and start its lifecycle."""
        if self._closing:
            raise RuntimeError("simulator is shutting down")
        call = self._new_call(request, base_url=base_url, call_id=call_id, inbound=inbound)
        sender = self._sender(call)
        runner = CallRunner(self, call, sender)
        self.calls[call.id] = call
        self._senders[call.id] = sender
        self.runners[call.id] = runner
        self._sender_tasks.spawn(sender.run(), name=f"webhooks-{call.id}")
        self._runner_tasks.spawn(runner.run(), name=f"call-{call.id}")
        self.log.add("call", call.id, event="status", status=call.status, endedReason=None)
        self.notify()
        return call

    def _base(self, base_url: str | None) -> str:
        return self.base_url or (base_url or "http://127.0.0.1").rstrip("/")

    def _delivery(self, request: Mapping[str, Any]) -> Delivery:
        return resolve_delivery(
            request,
            server_url=self.server_url,
            secret=self.secret,
            assistants=self.assistants,
            phone_numbers=self.phone_numbers,
        )

    def _sender(self, call: SimCall) -> WebhookSender:
        return WebhookSender(
            call,
            client=self._http_client,
            log=self.log,
            fault_for=self._webhook_fault,
            hmac_secret=self.hmac_secret,
            on_logged=self.notify,
            hmac_signing=self.hmac_signing,
            bracketed_types=self.bracketed_types,
        )

    async def inbound_call(
        self, phone_number_id: str, customer: dict[str, Any], *, base_url: str | None = None
    ) -> tuple[SimCall | None, dict[str, Any]]:
        """A customer calls ``phone_number_id``: Vapi asks the number's server (else the org's) which
        assistant answers with an ``assistant-request`` (ServerMessageAssistantRequest), waits for the
        answer (ServerMessageResponseAssistantRequest), then runs the call with it. Returns the call
        (None when the answer started none) and the request's log entry."""
        call_id = str(uuid.uuid4())
        request = {"phoneNumberId": phone_number_id, "customer": customer}
        asking = self._new_call(request, base_url=base_url, call_id=call_id, inbound=True)
        asking.status = "ringing"
        # Always sent: an assistant-request is not part of any subscription.
        asking.delivery = replace(asking.delivery, subscription=asking.delivery.subscription | {"assistant-request"})
        entry = await self._sender(asking).request("assistant-request")
        assert entry is not None
        answer = entry["answer"] if entry["delivered"] else None
        if not isinstance(answer, dict) or not (answer.get("assistantId") or answer.get("assistant")):
            return None, entry
        for key in ("assistantId", "assistant", "assistantOverrides"):
            if answer.get(key) is not None:
                request[key] = answer[key]
        return self.place_call(request, base_url=base_url, call_id=call_id, inbound=True), entry

    async def request(self, call_id: str, message_type: str, **fields: Any) -> dict[str, Any] | None:
        """Send a request message (``tool-calls``, ``transfer-destination-request``…) for a live call
        and wait for its answer; the log entry (``status``, ``answer``), None if not subscribed."""
        return await self._senders[call_id].request(message_type, **fields)

    async def redeliver(self, call_id: str, message_type: str) -> dict[str, Any] | None:
        """Deliver the call's last ``message_type`` message again (a backoff plan retry)."""
        return await self._senders[call_id].redeliver(message_type)

    def end_call(self, call_id: str, reason: str = END_CALL_REASON) -> None:
        """End a live call now with ``reason``."""
        self.runners[call_id].request_end(reason)

    def expire_recording_url(self, call_id: str) -> None:
        """The call's artifact ``stereoRecordingUrl`` answers 403 from now on (Vapi's URLs expire);
        ``GET /call/{id}/stereo-recording`` still serves the recording."""
        self.calls[call_id].recording_url_expired = True

    def customer_says(self, call_id: str, text: str) -> None:
        """The customer of a live call says ``text`` now (a test's barge-in: see ``CallScript.barge_in``)."""
        self.runners[call_id].customer_says(text)

    def check_api_key(self, authorization: str | None) -> bool:
        """Whether a REST request is authorised (any request, when no API key is configured)."""
        return self.api_key is None or authorization == f"Bearer {self.api_key}"

    def _public_key_ok(self, authorization: str | None) -> bool:
        if self.public_key is None:
            return bool(authorization and authorization.startswith("Bearer "))
        return authorization == f"Bearer {self.public_key}"

    # -- control -------------------------------------------------------------------------------------

    async def receive_control(self, call_id: str, raw: bytes, authorization: str | None) -> tuple[int, dict[str, Any]]:
        """Handle a POST to a call's control URL: (HTTP status, JSON body)."""
        parsed: Any = None
        with contextlib.suppress(msgspec.DecodeError):
            parsed = msgspec.json.decode(raw)
        entry = self.log.add(
            "control", call_id, status=None, message=parsed, raw=raw.decode("utf-8", "replace"), error=None
        )
        status, body = await self._control(call_id, parsed, authorization)
        entry.data["status"] = status
        if status >= 400:
            entry.data["error"] = body.get("message")
        self.notify()
        return status, body

    async def _control(self, call_id: str, parsed: Any, authorization: str | None) -> tuple[int, dict[str, Any]]:
        call = self.calls.get(call_id)
        if call is None or call.ended:
            return 404, vapi_error(404, "Call not found or already ended.")
        if (call.control_auth or self.monitor_auth_required) and not self._public_key_ok(authorization):
            return 401, vapi_error(401, "Invalid Key. Control requires the public key.")
        message = unwrap_control(parsed)
        if parsed is None:
            return 400, vapi_error(400, ["body must be valid JSON"])
        if errors := validate_control(message):
            return 400, vapi_error(400, errors)
        assert isinstance(message, dict)
        fault = self._fault(self._control_faults, call_id)
        if fault is not None:
            if fault.delay > 0:
                await asyncio.sleep(fault.delay)
            if fault.status is not None:
                return fault.status, vapi_error(fault.status, "injected fault")
        if self.calls[call_id].ended:  # it may have ended during the delay
            return 404, vapi_error(404, "Call not found or already ended.")
        self._apply_control(self.runners[call_id], message)
        return 200, {"ok": True}

    @staticmethod
    def _apply_control(runner: CallRunner, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "say":
            content = say_content(message)
            assert content is not None
            runner.say(
                content,
                end_after=bool(message.get("endCallAfterSpoken", False)),
                interrupt=bool(message.get("interruptAssistantEnabled", False)),
            )
        elif kind == "add-message":
            runner.add_message(message["message"], trigger_response=bool(message.get("triggerResponseEnabled", True)))
        elif kind == "control":
            action = message["control"]
            if action == "say-first-message":
                runner.say_first_message()
            else:
                muted, _, channel = action.partition("-")
                runner.set_muted("user" if channel == "customer" else "assistant", muted == "mute")
        elif kind == "end-call":
            runner.request_end(END_CALL_REASON)
        elif kind == "transfer":
            # ``content``, else the destination's ``message`` (SDK TransferDestinationNumber/Sip), is said
            # to the customer before the transfer.
            destination = message.get("destination")
            content = message.get("content")
            if not isinstance(content, str) and isinstance(destination, Mapping):
                content = destination.get("message")
            runner.transfer(destination, content if isinstance(content, str) else None)
        elif kind == "append-context":
            runner.append_context(message["content"])
        # send-transport-message (its TwiML or SIP request), handoff: accepted and logged; nothing to simulate

    # -- listen --------------------------------------------------------------------------------------

    def listen_refusal(self, call_id: str, authorization: str | None) -> tuple[int, str] | None:
        """Why a listen handshake for ``call_id`` is refused now: (HTTP status, reason), or None."""
        if self._closing:
            return 503, "shutting down"
        call = self.calls.get(call_id)
        if call is None:
            return 404, "call not found"
        if call.ended:
            return 404, "call has ended"
        fault = self._listen_faults.get(call_id) or self._listen_faults.get(ANY_CALL)
        if fault is not None:
            if fault.refuse_count > 0:
                fault.refuse_count -= 1
                return fault.refuse_status, "injected fault"
            if asyncio.get_running_loop().time() < fault.refuse_until:
                return fault.refuse_status, "injected fault"
        if (call.listen_auth or self.monitor_auth_required) and not self._public_key_ok(authorization):
            return 401, "listen requires the public key"
        return None

    def listen_stall_until(self, call_id: str) -> float:
        """Loop time until which the call's listen sockets send nothing."""
        fault = self._listen_faults.get(call_id) or self._listen_faults.get(ANY_CALL)
        return 0.0 if fault is None else fault.stall_until

    # -- fault injection -----------------------------------------------------------------------------

    def drop_listen(self, call_id: str, *, after_frames: int = 0, close_code: int | None = None) -> int:
        """Drop the call's open listen sockets after ``after_frames`` more audio frames: abort the
        transport without a close frame (``close_code=None``) or close with ``close_code`` (e.g. 1011).
        Returns how many connections it applies to."""
        connections = list(self.calls[call_id].connections)
        for connection in connections:
            connection.drop(after_frames=after_frames, close_code=close_code)
        self.log.add("fault", call_id, fault="drop-listen", afterFrames=after_frames, closeCode=close_code)
        return len(connections)

    def refuse_listen(
        self, call_id: str | None = None, *, seconds: float = 0.0, count: int = 0, status: int = 503
    ) -> None:
        """Refuse listen handshakes with HTTP ``status`` for ``seconds`` and/or the next ``count`` attempts
        (``call_id=None``: every call)."""
        fault = self._listen_faults.setdefault(call_id or ANY_CALL, ListenFault())
        fault.refuse_until = asyncio.get_running_loop().time() + seconds if seconds > 0 else 0.0
        fault.refuse_count = count
        fault.refuse_status = status
        self.log.add("fault", call_id, fault="refuse-listen", seconds=seconds, count=count, status=status)

    def stall_listen(self, call_id: str | None, seconds: float) -> None:
        """Listen sockets (open and new) of the call send nothing for ``seconds``; the audio of that time
        is skipped, as from a gateway that stopped forwarding."""
        fault = self._listen_faults.setdefault(call_id or ANY_CALL, ListenFault())
        fault.stall_until = asyncio.get_running_loop().time() + seconds
        self.log.add("fault", call_id, fault="stall-listen", seconds=seconds)

    def set_control_fault(
        self,
        call_id: str | None = None,
        *,
        delay: float = 0.0,
        status: int | None = None,
        count: int | None = None,
    ) -> None:
        """Make control requests slow (``delay`` seconds) and/or failing (``status``, not acted on)."""
        self._control_faults[call_id or ANY_CALL] = ControlFault(count=count, delay=delay, status=status)
        self.log.add("fault", call_id, fault="control", delay=delay, status=status, count=count)

    def set_webhook_fault(
        self, call_id: str | None = None, *, types: Iterable[str] | None = None, count: int | None = None
    ) -> None:
        """Make server-message delivery fail (not sent, logged as failed) for ``types`` (or all)."""
        fault = WebhookFault(count=count, types=frozenset(types) if types is not None else None)
        self._webhook_faults[call_id or ANY_CALL] = fault
        self.log.add("fault", call_id, fault="webhook", types=sorted(fault.types or []), count=count)

    def set_rest_fault(self, *, delay: float = 0.0, status: int | None = None, count: int | None = None) -> None:
        """Make the REST API slow and/or failing (``status``) for the next ``count`` requests."""
        self.rest_fault = RestFault(count=count, delay=delay, status=status)
        self.log.add("fault", None, fault="rest", delay=delay, status=status, count=count)

    def clear_faults(self) -> None:
        """Remove every injected fault (already-requested listen drops still happen)."""
        self._listen_faults.clear()
        self._control_faults.clear()
        self._webhook_faults.clear()
        self.rest_fault = None

    def take_rest_fault(self) -> RestFault | None:
        """The REST fault to apply to this request, if any (consumes one use)."""
        fault = self.rest_fault
        return fault if fault is not None and fault.consume() else None

    def _fault(self, faults: dict[str, ControlFault], call_id: str) -> ControlFault | None:
        fault = faults.get(call_id) or faults.get(ANY_CALL)
        return fault if fault is not None and fault.consume() else None

    def _webhook_fault(self, call_id: str, message_type: str) -> WebhookFault | None:
        fault = self._webhook_faults.get(call_id) or self._webhook_faults.get(ANY_CALL)
        if fault is None or not fault.matches(message_type) or not fault.consume():
            return None
        return fault

    # -- inspection (tests) --------------------------------------------------------------------------

    def listen_records(self, call_id: str) -> list[ListenRecord]:
        """Records of the call's listen connections, in connection order."""
        return list(self.log.listen.get(call_id, []))

    def audio_sent(self, call_id: str) -> bytes:
        """Every binary frame sent for the call, across all its connections, in order."""
        return b"".join(record.audio for record in self.listen_records(call_id))

    def audio_sent_per_connection(self, call_id: str) -> list[bytes]:
        """The binary frames sent on each connection, concatenated per connection."""
        return [record.audio for record in self.listen_records(call_id)]

    def texts_sent(self, call_id: str) -> list[str]:
        """Every text frame sent for the call, across all its connections."""
        return [text for record in self.listen_records(call_id) for text in record.texts]

    def control_received(self, call_id: str) -> list[dict[str, Any]]:
        """Every control message received for the call: parsed JSON (None when it was not JSON)."""
        return [entry.data["message"] for entry in self.log.select(kind="control", call_id=call_id)]

    def webhooks_sent(self, call_id: str | None = None, message_type: str | None = None) -> list[dict[str, Any]]:
        """Webhook log entries (``type``, ``url``, ``headers``, ``body``, ``status``, ``error``, ``delivered``)."""
        return [
            entry.data
            for entry in self.log.select(kind="webhook", call_id=call_id)
            if message_type is None or entry.data["type"] == message_type
        ]

    def messages_sent(self, call_id: str | None = None, message_type: str | None = None) -> list[dict[str, Any]]:
        """The ``message`` objects of the webhooks sent."""
        return [data["body"]["message"] for data in self.webhooks_sent(call_id, message_type)]

    async def wait_until(self, predicate: Callable[[], T | None], timeout: float = DEFAULT_WAIT) -> T:
        """Wait until ``predicate()`` returns something truthy, and return it.

        Re-checked on every logged change and every 10 ms (audio frames notify nobody: too many).
        """
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                if result := predicate():
                    return result
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(WAIT_POLL):
                        await changed.wait()

    async def wait_for_status(self, call_id: str, status: str, timeout: float = DEFAULT_WAIT) -> SimCall:
        """Wait until the call has reached ``status`` (now or earlier)."""

        def reached() -> SimCall | None:
            call = self.calls.get(call_id)
            if call is None:
                return None
            seen = {e.data["status"] for e in self.log.select(kind="call", call_id=call_id)}
            return call if status in seen else None

        return await self.wait_until(reached, timeout)

    async def wait_for_webhook(self, call_id: str, message_type: str, timeout: float = DEFAULT_WAIT) -> dict[str, Any]:
        """Wait until a webhook of ``message_type`` for the call has been sent (or failed); its log data."""
        return await self.wait_until(lambda: next(iter(self.webhooks_sent(call_id, message_type)), None), timeout)

    async def wait_idle(self, call_id: str, timeout: float = DEFAULT_WAIT) -> SimCall:
        """Wait until the call has ended and every server message of it is delivered (or failed)."""
        sender = self._senders[call_id]
        await self.wait_until(lambda: sender.finished, timeout)
        return self.calls[call_id]


def vapi_error(status: int, message: str | list[str]) -> dict[str, Any]:
    """An error body in Vapi's (NestJS) shape."""
    names = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 503: "Service Unavailable"}
    return {"message": message, "error": names.get(status, "Error"), "statusCode": status}
