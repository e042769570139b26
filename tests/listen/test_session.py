"""Listen sessions: pure helpers, and reconnects against the simulator's fault injection."""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

from service.listen.session import BACKOFF_CAP_SECONDS, backoff_delay, text_frame_event
from service.simulator import CallScript
from tests.harness import eventually, running_stack


def test_text_frames_become_events_and_garbage_is_kept_raw() -> None:
    event = text_frame_event('{"type": "transcript", "role": "user", "transcript": "hi"}')
    assert (event.source, event.type, event.payload["transcript"]) == ("listen", "transcript", "hi")
    assert text_frame_event("[1, 2]").type == "listen.message"
    garbage = text_frame_event("not json {")
    assert (garbage.type, garbage.payload) == ("listen.raw", {"raw": "not json {"})


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    assert all(0 <= backoff_delay(0, rng=rng) <= 0.2 for _ in range(100))
    assert all(0 <= backoff_delay(20, rng=rng) <= BACKOFF_CAP_SECONDS for _ in range(100))
    assert max(backoff_delay(4, rng=rng) for _ in range(200)) > 1.0


async def test_a_dropped_socket_reconnects_and_keeps_every_byte(database_url: str, tmp_path: Path) -> None:
    script = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=10.0, turns=())
    async with running_stack(database_url, tmp_path, script=script, pace=5) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "in-progress")
        await eventually(lambda: len(stack.sim.audio_sent(call_id)) >= 20_000, what="20 kB of audio were sent")
        assert stack.sim.drop_listen(call_id) == 1
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        recording = await stack.wait_for_recording(call_id)

        per_connection = stack.sim.audio_sent_per_connection(call_id)
        assert len(per_connection) >= 2, "the session reconnected after the drop"
        sent = b"".join(per_connection)
        pcm = (await stack.client.get(f"/v1/calls/{call_id}/recording.pcm")).content
        assert pcm == sent, "everything sent on every connection is stored, in order"
        assert recording["status"] == "partial"
        assert recording["sha256"] == hashlib.sha256(sent).hexdigest()
        assert len(recording["segments"]) == len(per_connection)
        assert [gap["reason"] for gap in recording["gaps"]] == ["listen socket dropped"]
        types = [e["type"] for e in (await stack.client.get(f"/v1/calls/{call_id}/events")).json()["data"]]
        assert types.count("listen.connected") == len(per_connection)
        assert "listen.disconnected" in types
