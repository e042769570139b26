"""A search result's offsetSeconds lands inside the utterance's audio, and recording.wav?start=&end=
serves that stretch: a real call through the simulator (which speaks each scripted utterance on its
speaker's channel) and Switchboard, both on loopback, recorded to files."""

from __future__ import annotations

import asyncio
import struct
from array import array
from pathlib import Path

from service.simulator import CallScript, Utterance
from tests.harness import running_stack

SAMPLE_RATE = 16_000
SCRIPT = CallScript(
    ring_after=0.3,
    answer_after=0.4,  # the listen socket is connected before audio flows: offsets must not count that
    talk_seconds=5.0,
    turns=(
        Utterance("assistant", "Welcome to Acme, how may I help?", at=0.2),
        Utterance("user", "I need a refund for my broken kettle", at=2.0),
        Utterance("assistant", "Refunds take three days", at=4.0),
    ),
    partial_transcripts=True,
)


def samples(wav: bytes) -> array[int]:
    assert wav[:4] == b"RIFF"
    assert wav[8:12] == b"WAVE"
    (data_bytes,) = struct.unpack_from("<I", wav, 40)
    assert data_bytes == len(wav) - 44
    values = array("h")
    values.frombytes(wav[44:])
    return values


def voiced(values: array[int]) -> float:
    """The share of samples that are clearly not silence. (Each simulated 20 ms frame stamps its index
    and call over its first two samples, so silence is not all zeros: an RMS would be fooled.)"""
    return sum(abs(v) > 200 for v in values) / len(values) if values else 0.0


def speech_starts(values: array[int]) -> list[float]:
    """Seconds where a channel turns from silence (20 ms windows) to sound."""
    window = SAMPLE_RATE // 50
    loud = [voiced(values[i : i + window]) > 0.5 for i in range(0, len(values) - window, window)]
    return [index / 50 for index in range(1, len(loud)) if loud[index] and not loud[index - 1]]


async def test_offsets_land_on_the_utterance_and_its_stretch_plays_it(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, script=SCRIPT, pace=1) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        await stack.wait_for_recording(call_id)
        await asyncio.sleep(0.3)  # the listen journal's last window

        async def wav(**params: str | float) -> bytes:
            response = await stack.client.get(f"/v1/calls/{call_id}/recording.wav", params=params)
            assert response.status_code == 200, response.text
            return response.content

        channels = {name: samples(await wav(channel=name)) for name in ("customer", "assistant")}
        for query, role, channel in (("kettle", "user", "customer"), ("three days", "assistant", "assistant")):
            response = await stack.client.get("/v1/search/transcripts", params={"q": query})
            [hit] = response.json()["data"]
            assert hit["role"] == role
            offset = hit["offsetSeconds"]
            truth = min(speech_starts(channels[channel]), key=lambda start: abs(start - offset))
            assert abs(offset - truth) < 0.3, (query, offset, speech_starts(channels[channel]))

            # The stretch from the offset is the utterance (as loud as its speaker gets); just before, silence.
            heard = samples(await wav(start=offset + 0.1, end=offset + 0.6, channel=channel))
            assert len(heard) == SAMPLE_RATE // 2
            assert voiced(heard) > 0.8
            before = samples(await wav(start=max(0.0, truth - 0.5), end=truth - 0.1, channel=channel))
            assert voiced(before) < 0.05


async def test_stretch_requests_are_checked(database_url: str, tmp_path: Path) -> None:
    script = CallScript(ring_after=0.1, answer_after=0.1, talk_seconds=2.0, turns=())
    async with running_stack(database_url, tmp_path, script=script, pace=4) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        recording = await stack.wait_for_recording(call_id)
        url = f"/v1/calls/{call_id}/recording.wav"

        whole = (await stack.client.get(url)).content
        part = await stack.client.get(url, params={"start": "0.5", "end": "1.25"})
        assert part.status_code == 200
        assert len(part.content) == 44 + int(0.75 * SAMPLE_RATE) * 4, "stereo: 4 bytes a sample"
        assert part.content[44:] == whole[44 + 8_000 * 4 : 44 + 20_000 * 4]
        ranged = await stack.client.get(url, params={"start": "0.5", "end": "1.25"}, headers={"Range": "bytes=44-99"})
        assert ranged.status_code == 206
        assert ranged.content == part.content[44:100]
        assert ranged.headers["content-range"] == f"bytes 44-99/{len(part.content)}"
        tail = await stack.client.get(url, params={"start": "1.5", "channel": "assistant"})
        assert len(tail.content) == 44 + (recording["bytes"] // 4 - 24_000) * 2

        assert (await stack.client.get(url, params={"start": "1", "end": "0.5"})).status_code == 422
        assert (await stack.client.get(url, params={"start": "-1"})).status_code == 400
        past = await stack.client.get(url, params={"start": "999"})
        assert past.status_code == 416
        assert past.headers["content-type"].startswith("application/problem+json")


GAP_SCRIPT = CallScript(
    ring_after=0.2,
    answer_after=0.2,
    talk_seconds=5.0,
    turns=(Utterance("user", "Please check my delivery address", at=3.2),),
)


async def test_offsets_count_the_gaps_of_a_dropped_listen_socket(database_url: str, tmp_path: Path) -> None:
    async with running_stack(database_url, tmp_path, script=GAP_SCRIPT, pace=1) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "in-progress", timeout=10)
        await asyncio.sleep(1.0)
        stack.sim.refuse_listen(call_id, seconds=0.8)  # about a second of audio is lost
        assert stack.sim.drop_listen(call_id) == 1
        await stack.sim.wait_for_status(call_id, "ended", timeout=30)
        recording = await stack.wait_for_recording(call_id)
        await asyncio.sleep(0.3)
        assert recording["gaps"], "the drop left a gap"
        assert len(recording["segments"]) == 2

        response = await stack.client.get("/v1/search/transcripts", params={"q": "delivery"})
        [hit] = response.json()["data"]
        wav = await stack.client.get(f"/v1/calls/{call_id}/recording.wav", params={"channel": "customer"})
        customer = samples(wav.content)
        offset = hit["offsetSeconds"]
        # The nearest start of the customer's sound (a reconnection can land inside the utterance and
        # split it), and the utterance playing from the offset.
        truth = min(speech_starts(customer), key=lambda start: abs(start - offset))
        assert abs(offset - truth) < 0.3, (offset, speech_starts(customer), recording["gaps"], recording["segments"])
        first = int((offset + 0.1) * SAMPLE_RATE)
        assert voiced(customer[first : first + SAMPLE_RATE // 4]) > 0.8
