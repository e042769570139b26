"""Monitor authentication Switchboard was not told about: a listen or control request refused with 401
is retried with the public key (contract section 9)."""

from __future__ import annotations

from pathlib import Path

from service.simulator import SimulatorServer, VapiSimulator
from tests.conftest import VAPI_KEY
from tests.harness import SHORT_SCRIPT, running_switchboard

PUBLIC_KEY = "test-vapi-public-key"


async def test_listen_and_control_retry_with_the_public_key_after_401(database_url: str, tmp_path: Path) -> None:
    sim = VapiSimulator(
        api_key=VAPI_KEY, public_key=PUBLIC_KEY, pace=8, script=SHORT_SCRIPT, monitor_auth_required=True
    )
    async with (
        SimulatorServer(sim) as simulator,
        running_switchboard(database_url, tmp_path, simulator, vapi_public_key=PUBLIC_KEY) as stack,
    ):
        call_id = await stack.place_call()
        await sim.wait_for_status(call_id, "in-progress")
        said = await stack.client.post(f"/v1/calls/{call_id}/say", json={"content": "One moment."})
        assert said.status_code == 202, said.text
        assert said.json()["status"] == "sent"
        recording = await stack.wait_for_recording(call_id)
        assert recording["status"] == "completed"
        assert recording["bytes"] > 0
        assert [m.get("content") for m in sim.control_received(call_id)] == ["One moment.", "One moment."]
