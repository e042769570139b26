"""GET /v1/recordings: recordings across calls, with the contract's filters."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from service.simulator import CallScript
from tests.harness import running_stack

SHORT = CallScript(ring_after=0.1, answer_after=0.1, talk_seconds=2.0, turns=())


async def test_recordings_are_found_by_status_duration_and_metadata(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, script=SHORT, pace=3) as stack:
        short_id = await stack.place_call(metadata={"team": "sales"})
        stack.sim.script = dataclasses.replace(SHORT, talk_seconds=6.0)
        long_id = await stack.place_call(metadata={"team": "support"})
        await asyncio.gather(*(stack.sim.wait_for_status(i, "ended", timeout=30) for i in (short_id, long_id)))
        await asyncio.gather(*(stack.wait_for_recording(i) for i in (short_id, long_id)))

        async def found(**params: str | int) -> list[str]:
            response = await stack.client.get("/v1/recordings", params=params)
            assert response.status_code == 200, response.text
            return [item["callId"] for item in response.json()["data"]]

        assert await found() == [long_id, short_id], "newest first"
        assert await found(status="completed") == [long_id, short_id]
        assert await found(status="failed") == []
        assert await found(minDurationSeconds=4) == [long_id]
        assert await found(**{"metadata.team": "sales"}) == [short_id]
        assert await found(customerNumber="+14155550123", limit=1) == [long_id]
        page = (await stack.client.get("/v1/recordings", params={"limit": 1})).json()
        rest = (await stack.client.get("/v1/recordings", params={"limit": 1, "cursor": page["nextCursor"]})).json()
        assert [item["callId"] for item in rest["data"]] == [short_id]
        assert rest["nextCursor"] is None
        item = page["data"][0]
        assert item["durationSeconds"] == round(item["bytes"] / 64_000, 3)
        assert item["durationSeconds"] > 4
        assert item["metadata"] == {"team": "support"}
