"""Server messages ("webhooks"): built in Vapi's shape, delivered in order per call, never retried."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import msgspec

from service.simulator.calls import SimCall, epoch_ms, now_utc
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
    ) -> None:
        self._call = call
        self._client = client
        self._log = log
        self._fault_for = fault_for
        self._hmac_secret = hmac_secret
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
        self._queue.put_nowait(Outgoing(message_type, server_message(self._call, message_type, **fields)))
        return True

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

    async def _deliver(self, item: Outgoing) -> None:
        call = self._call
        url = call.delivery.url
        raw = _encoder.encode(item.body)
        headers = {"Content-Type": "application/json", **call.delivery.headers}
        if self._hmac_secret is not None:
            timestamp = str(int(time.time()))
            signed = timestamp.encode() + b"." + raw
            headers["x-timestamp"] = timestamp
            headers["x-signature"] = hmac.new(self._hmac_secret.encode(), signed, hashlib.sha256).hexdigest()
        status: int | None = None
        error: str | None = None
        fault = self._fault_for(call.id, item.message_type)
        if url is None:
            error = "no server url configured"
        elif fault is not None:
            error = "injected fault: not delivered"
        else:
            try:
                response = await self._client().post(url, content=raw, headers=headers, timeout=call.delivery.timeout)
                status = response.status_code
                if not response.is_success:
                    error = f"HTTP {status}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
        self._log.add(
            "webhook",
            call.id,
            type=item.message_type,
            url=url,
            headers=headers,
            body=item.body,
            status=status,
            error=error,
            delivered=status is not None and error is None,
        )
        self._on_logged()
