"""State of a simulated call and its rendering in Vapi's wire format (the ``Call`` object)."""

from __future__ import annotations

import asyncio
import io
import secrets
import uuid
import wave
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from service.simulator import audio
from service.simulator.audio import FrameSource, call_tag
from service.simulator.script import CallScript
from service.vapi import messages as vapi_messages

DEFAULT_SERVER_MESSAGES: frozenset[str] = frozenset(vapi_messages.DEFAULT_SERVER_MESSAGES)
"""Vapi's default ``serverMessages`` subscription (no ``transcript``)."""

FINAL_TRANSCRIPTS_ONLY = vapi_messages.FINAL_TRANSCRIPTS
DEFAULT_SERVER_TIMEOUT_SECONDS = 20.0
COST_PER_MINUTE = 0.05
TWILIO_ACCOUNT_SID = "AC" + "51" * 16
"""The (fake) Twilio account the simulator's phone number belongs to."""
TWILIO_AUTH_TOKEN = "sim-twilio-auth-token-" + "9f" * 8
"""The (fake) Twilio auth token Vapi includes with the phone number: must never be stored."""
RECORDINGS_BASE = "https://storage.vapi.ai"
# The id of the one structured output the simulator extracts from every call.
STRUCTURED_OUTPUT_ID = "5a1c7e52-0000-4000-8000-000000000001"


StopReason = Literal["ended", "drop", "client", "shutdown"]


class ListenConnection(Protocol):
    """An accepted listen socket of a call, as the call runner drives it (``listen.ListenConnection``)."""

    @property
    def finished(self) -> asyncio.Event:
        """Set when the socket has closed."""
        ...

    def push_text(self, text: str) -> None: ...

    def wake(self) -> None: ...

    def stop(self, reason: StopReason) -> None: ...

    def drop(self, *, after_frames: int = 0, close_code: int | None = None) -> None: ...


def iso(moment: datetime) -> str:
    """ISO 8601 with milliseconds and ``Z``, as Vapi writes timestamps."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def now_utc() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


def epoch_ms(moment: datetime) -> int:
    """Milliseconds since the Unix epoch."""
    return int(moment.timestamp() * 1000)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


@dataclass(frozen=True, slots=True)
class Delivery:
    """Where and how a call's server messages go."""

    url: str | None
    headers: dict[str, str]
    timeout: float
    subscription: frozenset[str]

    def wants(self, message_type: str, *, transcript_type: str | None = None) -> bool:
        """Whether the call subscribed to this message (``transcript[transcriptType="final"]`` aware)."""
        if message_type == "transcript":
            return "transcript" in self.subscription or (
                transcript_type == "final" and FINAL_TRANSCRIPTS_ONLY in self.subscription
            )
        return message_type in self.subscription


def _server_delivery(server: Mapping[str, Any]) -> tuple[str, dict[str, str], float] | None:
    """(url, headers, timeout) of a Vapi ``Server`` object (vapi-server-sdk 3.0.0 ``Server``: url,
    headers, timeoutSeconds; the legacy ``secret`` goes in ``X-Vapi-Secret``), or None without a url."""
    if not isinstance(server.get("url"), str):
        return None
    headers = {str(k): str(v) for k, v in _mapping(server.get("headers")).items()}
    if isinstance(server.get("secret"), str):
        headers.setdefault("X-Vapi-Secret", server["secret"])
    timeout = DEFAULT_SERVER_TIMEOUT_SECONDS
    if isinstance(server.get("timeoutSeconds"), int | float):
        timeout = float(server["timeoutSeconds"])
    return server["url"], headers, timeout


def resolve_delivery(
    request: Mapping[str, Any],
    *,
    server_url: str | None,
    secret: str | None,
    assistants: Mapping[str, Mapping[str, Any]] | None = None,
    phone_numbers: Mapping[str, Mapping[str, Any]] | None = None,
) -> Delivery:
    """Apply Vapi's precedence ("events are only sent to one server URL"): the assistant's override
    server, the inline assistant's, the stored assistant's (``assistantId``), the phone number's
    (``phoneNumberId``), else the org's server URL + secret."""
    overrides = _mapping(request.get("assistantOverrides"))
    assistant = _mapping(request.get("assistant"))
    stored_assistant = _mapping((assistants or {}).get(str(request.get("assistantId"))))
    number = _mapping((phone_numbers or {}).get(str(request.get("phoneNumberId"))))
    url: str | None = None
    headers: dict[str, str] = {}
    timeout = DEFAULT_SERVER_TIMEOUT_SECONDS
    legacy = overrides if isinstance(overrides.get("serverUrl"), str) else assistant
    found = _server_delivery(_mapping(overrides.get("server"))) or _server_delivery(_mapping(assistant.get("server")))
    if found is None and isinstance(legacy.get("serverUrl"), str):
        secret_headers = (
            {"X-Vapi-Secret": legacy["serverUrlSecret"]} if isinstance(legacy.get("serverUrlSecret"), str) else {}
        )
        found = legacy["serverUrl"], secret_headers, timeout
    found = (
        found
        or _server_delivery(_mapping(stored_assistant.get("server")))
        or _server_delivery(_mapping(number.get("server")))
    )
    if found is not None:
        url, headers, timeout = found
    elif server_url is not None:
        url = server_url
        if secret is not None:
            headers = {"X-Vapi-Secret": secret}
    listed = overrides.get("serverMessages", assistant.get("serverMessages", stored_assistant.get("serverMessages")))
    subscription = frozenset(str(item) for item in listed) if isinstance(listed, list) else DEFAULT_SERVER_MESSAGES
    return Delivery(url=url, headers=headers, timeout=timeout, subscription=subscription)


def validate_create_call(body: object, *, phone: bool) -> list[str]:
    """Vapi-style validation messages for a create-call body (empty when valid)."""
    if not isinstance(body, Mapping):
        return ["body must be a JSON object"]
    errors = [f"property {key} should not exist" for key in body if key not in CREATE_CALL_PROPERTIES]
    if not any(body.get(key) for key in ("assistantId", "assistant", "squadId", "squad", "workflowId", "workflow")):
        errors.append(
            "Couldn't Get Assistant. Need Either `assistant`, `assistantId`, `squad`, `squadId`, "
            "`workflow`, Or `workflowId`."
        )
    if phone:
        if not (body.get("phoneNumberId") or body.get("phoneNumber")):
            errors.append("Couldn't Get Phone Number. Need Either `phoneNumberId` Or `phoneNumber`.")
        customer = body.get("customer")
        if body.get("customers") or body.get("customerId"):
            pass
        elif not isinstance(customer, Mapping):
            errors.append("Couldn't Get Customer. Need Either `customer`, `customers` Or `customerId`.")
        elif not (customer.get("number") or customer.get("sipUri")) or (
            customer.get("number") is not None and not _looks_e164(customer["number"])
        ):
            errors.append("customer.number must be a valid phone number in the E.164 format.")
    for key in ("assistantOverrides", "assistant", "customer", "phoneNumber", "schedulePlan"):
        if key in body and body[key] is not None and not isinstance(body[key], Mapping):
            errors.append(f"{key} must be an object")
    return errors


def _looks_e164(number: object) -> bool:
    return isinstance(number, str) and number.startswith("+") and number[1:].isdigit() and 2 <= len(number) <= 16


CREATE_CALL_PROPERTIES: frozenset[str] = frozenset(
    {
        "assistantVersion",
        "squadVersion",
        "transport",
        "customers",
        "name",
        "schedulePlan",
        "assistantId",
        "assistant",
        "assistantOverrides",
        "squadId",
        "squad",
        "squadOverrides",
        "workflowId",
        "workflow",
        "workflowOverrides",
        "phoneNumberId",
        "phoneNumber",
        "customerId",
        "customer",
    }
)
"""Top-level properties of ``CreateOutboundCallDto`` (vapi-server-sdk 3.0.0); Vapi rejects others."""


@dataclass(slots=True)
class Spans:
    """Frame intervals [start, end) in which something holds (a speaker speaks, a channel is muted)."""

    spans: list[tuple[int, int]] = field(default_factory=list)

    def add(self, start: int, end: int) -> None:
        """Add the interval [start, end)."""
        if end > start:
            self.spans.append((start, end))

    def open(self, start: int) -> None:
        """Start an interval with no end yet."""
        self.spans.append((start, 1 << 62))

    def close(self, end: int) -> None:
        """End the open interval(s) at ``end``."""
        self.spans = [(a, min(b, end)) if b == 1 << 62 else (a, b) for a, b in self.spans]

    def busy_until(self) -> int:
        """End of the last interval (0 when empty)."""
        return max((b for _, b in self.spans), default=0)

    def __contains__(self, index: int) -> bool:
        return any(start <= index < end for start, end in self.spans)


@dataclass(eq=False)
class SimCall:
    """One simulated call: its request, lifecycle state, audio timeline and listeners."""

    id: str
    org_id: str
    request: dict[str, Any]
    script: CallScript
    delivery: Delivery
    http_base: str
    ws_base: str
    frames: FrameSource
    created_at: datetime = field(default_factory=now_utc)
    status: str = "queued"
    updated_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    ended_reason: str | None = None
    destination: dict[str, Any] | None = None
    provider_call_id: str = field(default_factory=lambda: "CA" + secrets.token_hex(16))
    tag: int = 0
    # audio timeline: frame n covers [audio_t0 + n*frame_dt, audio_t0 + (n+1)*frame_dt) in loop time
    audio_t0: float | None = None
    end_frame: int | None = None
    # Where the script will end the audio: no frame past it is sent, even when the loop runs late.
    planned_end_frame: int | None = None
    user_speech: Spans = field(default_factory=Spans)
    assistant_speech: Spans = field(default_factory=Spans)
    user_muted: Spans = field(default_factory=Spans)
    assistant_muted: Spans = field(default_factory=Spans)
    turn: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    openai_messages: list[dict[str, Any]] = field(default_factory=list)
    connections: set[ListenConnection] = field(default_factory=set)
    inbound: bool = False
    # Vapi's stereo recording (``stereo_wav``) and whether its artifact URL has expired (a test's fault:
    # the URL then answers 403, ``GET /call/{id}/stereo-recording`` still serves it).
    _stereo: bytes | None = None
    recording_url_expired: bool = False

    def __post_init__(self) -> None:
        self.tag = call_tag(self.id)
        if self.updated_at is None:
            self.updated_at = self.created_at

    @classmethod
    def create(
        cls,
        request: dict[str, Any],
        *,
        org_id: str,
        script: CallScript,
        delivery: Delivery,
        http_base: str,
        ws_base: str,
        frames: FrameSource,
        call_id: str | None = None,
        inbound: bool = False,
    ) -> SimCall:
        """A new queued call for a create-call request (or an inbound call, answered by its server)."""
        return cls(
            id=call_id or str(uuid.uuid4()),
            inbound=inbound,
            org_id=org_id,
            request=request,
            script=script,
            delivery=delivery,
            http_base=http_base,
            ws_base=ws_base,
            frames=frames,
        )

    # -- derived views -------------------------------------------------------------------------------

    @property
    def overrides(self) -> Mapping[str, Any]:
        """``assistantOverrides`` of the request (empty mapping when absent)."""
        return _mapping(self.request.get("assistantOverrides"))

    @property
    def monitor_plan(self) -> Mapping[str, Any]:
        """``monitorPlan`` from the overrides or the inline assistant."""
        return _mapping(self.overrides.get("monitorPlan")) or _mapping(
            _mapping(self.request.get("assistant")).get("monitorPlan")
        )

    @property
    def listen_auth(self) -> bool:
        """Whether the listen handshake needs the public key."""
        return bool(self.monitor_plan.get("listenAuthenticationEnabled"))

    @property
    def control_auth(self) -> bool:
        """Whether control requests need the public key."""
        return bool(self.monitor_plan.get("controlAuthenticationEnabled"))

    @property
    def ended(self) -> bool:
        """Whether the call has reached its final status."""
        return self.status == "ended"

    @property
    def listen_url(self) -> str:
        """The call's listen WebSocket URL."""
        return f"{self.ws_base}/{self.id}/listen"

    @property
    def control_url(self) -> str:
        """The call's control URL."""
        return f"{self.http_base}/{self.id}/control"

    @property
    def customer(self) -> dict[str, Any] | None:
        """The customer as given in the request."""
        customer = self.request.get("customer")
        return dict(customer) if isinstance(customer, Mapping) else None

    @property
    def phone_number(self) -> dict[str, Any]:
        """The org phone number the call is placed from (inline, or a stand-in for ``phoneNumberId``)."""
        inline = self.request.get("phoneNumber")
        if isinstance(inline, Mapping):
            return dict(inline)
        return {
            "id": self.request.get("phoneNumberId"),
            "orgId": self.org_id,
            "provider": "twilio",
            "number": "+15550100000",
            "twilioAccountSid": TWILIO_ACCOUNT_SID,
            # Vapi's status updates may carry the number's Twilio credentials (TwilioPhoneNumber).
            "twilioAuthToken": TWILIO_AUTH_TOKEN,
            "twilioApiKey": "SK" + "a1" * 16,
            "twilioApiSecret": "sim-twilio-api-secret",
            "name": "Switchboard simulator",
            "status": "active",
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.created_at),
        }

    @property
    def duration_seconds(self) -> float:
        """Seconds from answer to end (0 when never answered)."""
        if self.started_at is None or self.ended_at is None:
            return 0.0
        return max(0.0, (self.ended_at - self.started_at).total_seconds())

    @property
    def cost(self) -> float:
        """A plausible cost in USD."""
        return round(self.duration_seconds / 60 * COST_PER_MINUTE, 4)

    def costs(self) -> list[dict[str, Any]]:
        """The cost split by component, summing to :attr:`cost` (vapi-server-sdk 3.0.0 ``CallCostsItem``:
        transport, transcriber, model, voice and vapi items with their required fields)."""
        minutes = round(self.duration_seconds / 60, 4)
        spoken = sum(len(m["message"]) for m in self.messages if m["role"] == "bot")
        shares = {"transport": 0.4, "transcriber": 0.15, "model": 0.2, "voice": 0.15}
        parts = {kind: round(self.cost * share, 4) for kind, share in shares.items()}
        vapi = round(self.cost - sum(parts.values()), 4)  # the rest: the parts add up to the total
        return [
            {"type": "transport", "provider": "twilio", "minutes": minutes, "cost": parts["transport"]},
            {
                "type": "transcriber",
                "transcriber": {"provider": "deepgram"},
                "minutes": minutes,
                "cost": parts["transcriber"],
            },
            {
                "type": "model",
                "model": {"provider": "openai", "model": "gpt-4o"},
                "promptTokens": 40 * self.turn,
                "completionTokens": 12 * self.turn,
                "cost": parts["model"],
            },
            {"type": "voice", "voice": {"provider": "11labs"}, "characters": spoken, "cost": parts["voice"]},
            {"type": "vapi", "subType": "normal", "minutes": minutes, "cost": vapi},
        ]

    def analysis(self) -> dict[str, Any]:
        """Vapi's analysis of the ended call (SDK ``Analysis``: summary, structuredData, successEvaluation)."""
        turns = sum(1 for m in self.messages if m["role"] in ("bot", "user"))
        return {
            "summary": self.summary(),
            "structuredData": {"turns": turns, "endedReason": self.ended_reason},
            "successEvaluation": "true" if turns else "false",
        }

    def structured_outputs(self) -> dict[str, Any]:
        """``artifact.structuredOutputs``: results by structured-output id (``{name, result}``)."""
        return {STRUCTURED_OUTPUT_ID: {"name": "outcome", "result": {"resolved": self.ended_reason is not None}}}

    def transcript_text(self) -> str:
        """The conversation as Vapi's artifact transcript renders it (``AI: …`` / ``User: …`` lines)."""
        lines = []
        for message in self.messages:
            if message["role"] in ("bot", "user"):
                speaker = "AI" if message["role"] == "bot" else "User"
                lines.append(f"{speaker}: {message['message']}")
        return "\n".join(lines) + ("\n" if lines else "")

    def artifact(self) -> dict[str, Any]:
        """The call's artifact (messages and transcript)."""
        return {
            "messages": [dict(m) for m in self.messages],
            "messagesOpenAIFormatted": [dict(m) for m in self.openai_messages],
            "transcript": self.transcript_text(),
            # Stable recording URLs (Artifact.recordingUrl, stereoRecordingUrl, pcapUrl); the presigned
            # ones are added per delivery (webhooks.with_fresh_presigned_urls).
            "recordingUrl": f"{RECORDINGS_BASE}/{self.id}-mono.wav",
            # Served by the simulator itself (GET /recordings/{id}-stereo.wav), as Vapi's storage serves it.
            "stereoRecordingUrl": f"{self.http_base}/recordings/{self.id}-stereo.wav",
            "pcapUrl": f"{RECORDINGS_BASE}/{self.id}.pcap",
            **({"structuredOutputs": self.structured_outputs()} if self.ended else {}),
        }

    def to_vapi(self) -> dict[str, Any]:
        """The call as Vapi's REST API returns it (``Call``)."""
        call: dict[str, Any] = {
            "id": self.id,
            "orgId": self.org_id,
            "createdAt": iso(self.created_at),
            "updatedAt": iso(self.updated_at or self.created_at),
            "type": "inboundPhoneCall" if self.inbound else "outboundPhoneCall",
            "status": self.status,
            "cost": self.cost,
            "monitor": {"listenUrl": self.listen_url, "controlUrl": self.control_url},
            "phoneCallProvider": "twilio",
            "phoneCallProviderId": self.provider_call_id,
            "phoneCallTransport": "pstn",
            "transport": {
                "provider": "twilio",
                "accountSid": TWILIO_ACCOUNT_SID,
                "callSid": self.provider_call_id,
            },
        }
        for key in (
            "assistantId",
            "assistant",
            "assistantOverrides",
            "squadId",
            "squad",
            "workflowId",
            "workflow",
            "phoneNumberId",
            "phoneNumber",
            "customerId",
            "customer",
            "name",
            "schedulePlan",
        ):
            if self.request.get(key) is not None:
                call[key] = self.request[key]
        if self.started_at is not None:
            call["startedAt"] = iso(self.started_at)
        if self.ended_at is not None:
            call["endedAt"] = iso(self.ended_at)
        if self.ended_reason is not None:
            call["endedReason"] = self.ended_reason
        if self.destination is not None:
            call["destination"] = self.destination
        if self.ended:
            call["messages"] = [dict(m) for m in self.messages]
            call["artifact"] = self.artifact()
            call["analysis"] = self.analysis()
            call["costs"] = self.costs()
        return call

    def stereo_wav(self) -> bytes:
        """The call's stereo recording as Vapi keeps it (customer left, assistant right): a 16-bit WAV of
        the call's audio timeline, from the answer to the end; made once."""
        if self._stereo is None:
            out = io.BytesIO()
            with wave.open(out, "wb") as wav:
                wav.setnchannels(audio.CHANNELS)
                wav.setsampwidth(audio.SAMPLE_WIDTH)
                wav.setframerate(audio.SAMPLE_RATE)
                wav.writeframes(b"".join(self.frame(index) for index in range(self.end_frame or 0)))
            self._stereo = out.getvalue()
        return self._stereo

    def summary(self) -> str:
        """A stand-in for Vapi's LLM call summary."""
        turns = sum(1 for m in self.messages if m["role"] in ("bot", "user"))
        return f"Simulated call with {turns} turns, ended by {self.ended_reason or 'nobody yet'}."

    # -- audio ---------------------------------------------------------------------------------------

    def frame(self, index: int) -> bytes:
        """Audio frame ``index`` of this call's timeline."""
        return self.frames.frame(
            self.tag,
            index,
            user=index in self.user_speech and index not in self.user_muted,
            assistant=index in self.assistant_speech and index not in self.assistant_muted,
        )
