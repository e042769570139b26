"""Every control type of Vapi's SDK goes through ``POST /v1/calls/{id}/control`` (``say`` through its own
route) to the simulated Vapi, which validates it on arrival with the one schema, and arrives as an SDK
``ClientInboundMessage`` (contract section 10)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pydantic

from service.simulator import CallScript
from service.vapi.control import CONTROL_TYPES
from tests.harness import Stack, running_stack
from tests.simulator.test_sdk_models import CONTROL_MESSAGES, SIP_TRANSFER, SIP_TRANSPORT

SCRIPT = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=60.0, turns=())


async def _send(stack: Stack, call_id: str, message: dict[str, Any]) -> dict[str, Any]:
    if message["type"] == "say":
        body = {key: value for key, value in message.items() if key != "type"}
        response = await stack.client.post(f"/v1/calls/{call_id}/say", json=body)
    else:
        response = await stack.client.post(f"/v1/calls/{call_id}/control", json=message)
    assert response.status_code == 202, response.text
    injection: dict[str, Any] = response.json()
    return injection


async def test_every_sdk_control_type_reaches_vapi_and_validates_there(database_url: str, tmp_path: Path) -> None:
    from vapi.types import ClientInboundMessageMessage

    sdk = pydantic.TypeAdapter(ClientInboundMessageMessage)
    # The ones that end the call (say with endCallAfterSpoken, end-call, transfers) each on a call of its own.
    ending_types = ("say", "end-call", "transfer")
    messages = [msgspec.to_builtins(m) for m in (*CONTROL_MESSAGES.values(), SIP_TRANSPORT)]
    messages = [m for m in messages if m["type"] not in ending_types]
    enders = [msgspec.to_builtins(CONTROL_MESSAGES[kind]) for kind in ending_types]
    enders.insert(-1, msgspec.to_builtins(SIP_TRANSFER))
    assert {m["type"] for m in messages + enders} == set(CONTROL_TYPES)

    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=4) as stack:
        talking = await stack.place_call()
        ending = [await stack.place_call() for _ in enders]
        for call_id in (talking, *ending):
            await stack.sim.wait_for_status(call_id, "in-progress", timeout=20)
        for message in messages:
            injection = await _send(stack, talking, message)
            assert (injection["type"], injection["status"], injection["error"]) == (message["type"], "sent", None)
        for call_id, message in zip(ending, enders, strict=True):
            assert (await _send(stack, call_id, message))["status"] == "sent"

        arrived = stack.sim.control_received(talking) + [stack.sim.control_received(c)[0] for c in ending]
        assert [m["type"] for m in arrived] == [m["type"] for m in messages + enders]
        for sent, received in zip(messages + enders, arrived, strict=True):
            # Exactly what was asked (say with Vapi's defaults filled in), and an SDK message.
            assert received == sent
            assert sdk.validate_python(received).type == sent["type"]
        transferred = await stack.sim.wait_for_status(ending[-1], "ended", timeout=20)
        assert transferred.destination == enders[-1]["destination"]
