"""Analytics measured from real recordings: the simulator speaks scripted turns on each speaker's
channel (overlaps and silences included), Switchboard records them through the listen socket, and
the analytics worker's voice activity detector must find the script's truth within half a second."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from service.simulator import CallScript, Utterance
from tests.harness import Stack, running_stack

# assistant 0-2, customer 1.5-3.5 (barges in), nobody 3.5-6.5, assistant 6.5-8, customer 7.5-8.5
# (barges in), assistant 9-10, customer 11-13, assistant 12-13.5 (barges in), nobody until 14.5.
SCRIPT = CallScript(
    ring_after=0.2,
    answer_after=0.2,
    talk_seconds=14.5,
    partial_transcripts=False,
    turns=(
        Utterance("assistant", "Hello, thanks for calling Acme.", at=0.0, duration=2.0),
        Utterance("user", "Hi, I have a problem with my order.", at=1.5, duration=2.0),
        Utterance("assistant", "Let me look that up.", at=6.5, duration=1.5),
        Utterance("user", "It is order four two.", at=7.5, duration=1.0),
        Utterance("assistant", "Found it.", at=9.0, duration=1.0),
        Utterance("user", "Can you refund it today?", at=11.0, duration=2.0),
        Utterance("assistant", "Yes, I can do that.", at=12.0, duration=1.5),
    ),
)
TRUTH = {
    "customer": {"talkSeconds": 5.0, "silenceSeconds": 9.5},
    "assistant": {"talkSeconds": 6.0, "silenceSeconds": 8.5},
    "overlapSeconds": 2.0,
    "longestSilenceSeconds": 3.0,
}


async def analysed(stack: Stack, call_id: str, timeout: float = 30) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            response = await stack.client.get(f"/v1/calls/{call_id}/analytics")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["status"] != "pending":
                return body
            await asyncio.sleep(0.1)


def close(measured: dict[str, Any], truth: dict[str, Any], tolerance: float = 0.5) -> None:
    for key, expected in truth.items():
        if isinstance(expected, dict):
            close(measured[key], expected, tolerance)
        else:
            assert abs(measured[key] - expected) <= tolerance, (key, measured[key], expected)


async def test_analytics_match_the_script(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=4, analytics_poll_seconds=0.2) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        await stack.wait_for_recording(call_id)
        result = await analysed(stack, call_id)

        assert result["status"] == "completed", result
        close(result, TRUTH)
        assert result["interruptions"] == {"customer": 2, "assistant": 1}
        assert abs(result["talkRatio"] - 5 / 6) < 0.1
        assert abs(result["analyzedSeconds"] - 14.5) < 0.3
        assert len(result["activity"]["customer"]) == 3
        assert len(result["activity"]["assistant"]) == 4

        # The call carries the summary; the list filters on it.
        call = (await stack.client.get(f"/v1/calls/{call_id}")).json()
        assert call["analytics"]["status"] == "completed"
        assert call["analytics"]["longestSilenceSeconds"] == result["longestSilenceSeconds"]
        assert "activity" not in call["analytics"]

        async def listed(**params: float) -> list[str]:
            response = await stack.client.get("/v1/calls", params=params)
            assert response.status_code == 200, response.text
            return [item["id"] for item in response.json()["data"]]

        assert await listed(minLongestSilenceSeconds=2.5) == [call_id]
        assert await listed(minLongestSilenceSeconds=4) == []
        assert await listed(minOverlapSeconds=1.5, minLongestSilenceSeconds=2.5) == [call_id]
        assert await listed(minOverlapSeconds=3) == []
        assert (await stack.client.get("/v1/calls", params={"minOverlapSeconds": -1})).status_code == 400

        metrics = (await stack.client.get("/metrics")).text
        assert 'switchboard_analytics_runs_total{outcome="completed"} 1.0' in metrics
        assert (await stack.client.get("/v1/calls/nope/analytics")).status_code == 404


GAP_SCRIPT = CallScript(
    ring_after=0.2,
    answer_after=0.2,
    talk_seconds=11.5,
    partial_transcripts=False,
    turns=(
        Utterance("assistant", "Hello.", at=0.0, duration=1.0),
        # Late enough to be heard after the longest reconnection the backoff can draw.
        Utterance("user", "Hi.", at=9.5, duration=1.0),
    ),
)


async def test_a_gap_is_not_counted_as_silence(database_url: str, tmp_path: Path) -> None:
    """Nobody talks from 1 s to 9.5 s, but 2 s or more of it, from 2 s on, is lost (the listen socket
    dropped): the silences heard either side of the gap are apart, and the lost audio is neither talk nor
    silence."""
    async with running_stack(database_url, tmp_path, script=GAP_SCRIPT, pace=1, analytics_poll_seconds=0.2) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "in-progress", timeout=10)
        await asyncio.sleep(2.0)
        stack.sim.refuse_listen(call_id, seconds=2.0)
        assert stack.sim.drop_listen(call_id) == 1
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        recording = await stack.wait_for_recording(call_id)
        result = await analysed(stack, call_id)

        lost = sum(gap["durationSeconds"] for gap in recording["gaps"])
        heard = recording["durationSeconds"]  # the audio stored: the gaps are not in it
        assert lost > 1.5, recording["gaps"]
        assert result["status"] == "completed", result
        assert abs(result["analyzedSeconds"] - heard) < 0.1, "the gap is not analysed"
        # Heard: 1 s talk, ~1 s silence, [gap], ~7.5 - lost s silence, 1 s talk, 1 s silence.
        assert result["longestSilenceSeconds"] < 7.5 - lost + 0.5, "the silences either side of the gap are apart"
        assert abs(result["customer"]["talkSeconds"] - 1.0) <= 0.5
        assert abs(result["customer"]["silenceSeconds"] - (heard - 1.0)) <= 0.5
        assert abs(result["assistant"]["silenceSeconds"] - (heard - 1.0)) <= 0.5
