"""Server messages ("webhooks"): built in Vapi's shape, delivered in order per call, never retried."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import msgspec

from service.simulator.calls import FINAL_TRANSCRIPTS_ONLY, SimCall, epoch_ms, now_utc
from service.simulator.faults import WebhookFault
from service.simulator.log import SimulatorLog

_encoder = msgspec.json.Encoder()


def server_message(call: SimCall, message_type: str, **fields: Any) -> dict[str, Any]:
    """A ``{"message": …}`` body for ``call``, with the common fields Vapi includes."""
    message: dict[str, Any] = {"type": message_type, **fields, "timestamp": epoch_ms(now_utc())}
    message["call"] = call.to_vapi()
    if (customer := call.customer) is not None:
        message["customer"] = customer
    message["phoneNumber"] = call.phone_number
    return {"message": message}


@dataclass(frozen=True, slots=True)
class HmacSigning:
    """How the simulated org's HMAC credential signs server messages (vapi-server-sdk 3.0.0
    ``CreateHmacCredentialDto``: algorithm, signatureHeader, timestampHeader, signaturePrefix,
    payloadFormat, and the docs' hex|base64 encoding). The timestamp unit is undocumented: both."""

    secret: str
    algorithm: Literal["sha256", "sha512", "sha1"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    signature_header: str = "x-signature"
    timestamp_header: str = "x-timestamp"
    prefix: str = ""
    payload_format: str = "{timestamp}.{body}"
    milliseconds: bool = False

    def headers(self, raw: bytes, *, now: float) -> dict[str, str]:
        """The signature (and timestamp) headers for one delivery of ``raw``."""
        timestamp = str(int(now * 1000) if self.milliseconds else int(now))
        signed = self.payload_format.replace("{timestamp}", timestamp).encode().replace(b"{body}", raw)
        digest = hmac.new(self.secret.encode(), signed, getattr(hashlib, self.algorithm))
        encoded = digest.hexdigest() if self.encoding == "hex" else base64.b64encode(digest.digest()).decode()
        return {self.timestamp_header: timestamp, self.signature_header: self.prefix + encoded}


PRESIGNED_KINDS = ("Mono", "Stereo", "Customer", "Assistant")


def with_fresh_presigned_urls(body: dict[str, Any]) -> dict[str, Any]:
    """The body with new presigned artifact URLs (Artifact.presigned*Url, vapi-server-sdk 3.0.0):
    Vapi signs them anew for every delivery, so two deliveries of one message differ in bytes."""
    message = body["message"]
    artifact = message.get("artifact")
    if not isinstance(artifact, dict):
        return body
    call_id = message.get("call", {}).get("id", "call")
    signature = secrets.token_hex(8)
    fresh = {
        f"presigned{kind}Url": f"https://storage.vapi.ai/{call_id}-{kind.lower()}.wav?X-Amz-Signature={signature}"
        for kind in PRESIGNED_KINDS
    }
    return {"message": {**message, "artifact": {**artifact, **fresh}}}


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One server message waiting for delivery."""

    message_type: str
    body: dict[str, Any]


class WebhookSender:
    """Delivers one call's server messages in order through the shared client.

    One instance (and one task) per call: a slow server delays only that call's messages, and a failed
    delivery is logged and dropped, as Vapi does without a ``backoffPlan``.
    """

    def __init__(
        self,
        call: SimCall,
        *,
        client: Callable[[], httpx.AsyncClient],
        log: SimulatorLog,
        fault_for: Callable[[str, str], WebhookFault | None],
        hmac_secret: str | None,
        on_logged: Callable[[], None],
        hmac_signing: HmacSigning | None = None,
        bracketed_types: bool = False,
    ) -> None:
        self._call = call
        self._client = client
        self._log = log
        self._fault_for = fault_for
        self._signing = hmac_signing or (HmacSigning(hmac_secret) if hmac_secret is not None else None)
        # Name a final transcript by the subscription entry it matched (transcript[transcriptType="final"]),
        # as the message type enum of Vapi's API allows.
        self._bracketed_types = bracketed_types
        self.last_bodies: dict[str, dict[str, Any]] = {}
        """The last body sent of each message type (for redelivery)."""
        self._on_logged = on_logged
        self._queue: asyncio.Queue[Outgoing | None] = asyncio.Queue()
        self._closed = False
        self.finished = False
        """True once closed and everything queued was delivered (or failed)."""

    def send(self, message_type: str, *, transcript_type: str | None = None, **fields: Any) -> bool:
        """Queue a message if the call subscribed to it; the body is built now (a snapshot of the call)."""
        if self._closed or not self._call.delivery.wants(message_type, transcript_type=transcript_type):
            return False
        if transcript_type is not None:
            fields["transcriptType"] = transcript_type
        wire_type = message_type
        if (
            self._bracketed_types
            and transcript_type == "final"
            and "transcript" not in self._call.delivery.subscription
        ):
            wire_type = FINAL_TRANSCRIPTS_ONLY
        self._queue.put_nowait(Outgoing(message_type, server_message(self._call, wire_type, **fields)))
        return True

    async def redeliver(self, message_type: str) -> dict[str, Any] | None:
        """Deliver the last message of ``message_type`` again now, as a backoff plan retry does (the
        same message, fresh presigned URLs); its log entry, None if none was sent."""
        body = self.last_bodies.get(message_type)
        return None if body is None else await self._deliver(Outgoing(message_type, body))

    async def request(self, message_type: str, **fields: Any) -> dict[str, Any] | None:
        """Send a message that needs an answer now and wait for it, as Vapi does for ``tool-calls``,
        ``transfer-destination-request``… (answers: vapi-server-sdk ``ServerMessageResponse*``).
        None when the call did not subscribe to it (Vapi would not ask); else the log entry, with the
        answer's status and body."""
        if not self._call.delivery.wants(message_type):
            return None
        if message_type == "tool-calls" and "toolWithToolCallList" not in fields:
            fields["toolWithToolCallList"] = _tools_with_calls(fields.get("toolCallList", []))
        return await self._deliver(Outgoing(message_type, server_message(self._call, message_type, **fields)))

    def close(self) -> None:
        """No more messages: the sender finishes once the queue is delivered."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)

    @property
    def pending(self) -> int:
        """Messages not delivered yet."""
        return self._queue.qsize()

    async def run(self) -> None:
        """Deliver queued messages, in order, until closed."""
        while (item := await self._queue.get()) is not None:
            await self._deliver(item)
        self.finished = True
        self._on_logged()

    async def _deliver(self, item: Outgoing) -> dict[str, Any]:
        call = self._call
        url = call.delivery.url
        self.last_bodies[item.message_type] = item.body
        body = with_fresh_presigned_urls(item.body)
        raw = _encoder.encode(body)
        headers = {"Content-Type": "application/json", **call.delivery.headers}
        if self._signing is not None:
            headers.update(self._signing.headers(raw, now=time.time()))
        status: int | None = None
        error: str | None = None
        answer: Any = None
        fault = self._fault_for(call.id, item.message_type)
        sent_at = time.time()  # when the POST began: what latency is measured from (bench/listen.py --burst)
        if url is None:
            error = "no server url configured"
        elif fault is not None:
            error = "injected fault: not delivered"
        else:
            try:
                response = await self._client().post(url, content=raw, headers=headers, timeout=call.delivery.timeout)
                status = response.status_code
                answer = _answer_of(response)
                if not response.is_success:
                    error = f"HTTP {status}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        entry = self._log.add(
            "webhook",
            call.id,
            type=item.message_type,
            url=url,
            headers=headers,
            body=body,
            sentAt=sent_at,
            status=status,
            error=error,
            delivered=status is not None and error is None,
            answer=answer,
        )
        self._on_logged()
        return entry.data


def _tools_with_calls(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``toolWithToolCallList`` for a ``toolCallList`` (required by ServerMessageToolCalls; items as
    FunctionToolWithToolCall: the tool, by ``type`` and ``function``, with its ``toolCall``)."""
    return [
        {"type": "function", "function": {"name": call.get("function", {}).get("name", "")}, "toolCall": call}
        for call in tool_calls
    ]


def _answer_of(response: httpx.Response) -> Any:
    """The answer's JSON (what Vapi acts on for a request message), else its text."""
    try:
        return response.json()
    except ValueError:
        return response.text
