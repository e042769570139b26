"""Running the simulator: clean in-process shutdown mid-call, and the ``run_simulator`` process entry point."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from service.simulator import SimulatorServer, VapiSimulator
from tests.simulator.conftest import LONG_SCRIPT, WebhookReceiver, capture_listen, place_call

ROOT = Path(__file__).resolve().parents[2]


async def test_shutdown_mid_call_closes_everything(receiver: WebhookReceiver) -> None:
    sim = VapiSimulator(server_url=receiver.url, pace=20, script=LONG_SCRIPT)
    before = asyncio.all_tasks()
    async with SimulatorServer(sim) as server, httpx.AsyncClient(base_url=server.base_url) as client:
        call = await place_call(client)
        listening = asyncio.create_task(capture_listen(call["monitor"]["listenUrl"]))
        await sim.wait_until(lambda: sim.listen_records(call["id"]) and sim.listen_records(call["id"])[0].audio_frames)
    captured = await listening
    assert captured.close_code == 1001
    assert sim.listen_records(call["id"])[0].close == "shutdown"
    assert sim.calls[call["id"]].status == "in-progress"  # cancelled, never ended
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()} - {asyncio.current_task()}
    assert leftover == set()
    assert sim.closing
    assert sim.webhooks_sent(call["id"])  # what was queued before shutdown went out


def test_run_simulator_process_serves_and_stops_on_sigint(tmp_path: Path) -> None:
    code = "from service.simulator import run_simulator; run_simulator(port=0, pace=20, talk_seconds=1)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert line.startswith("Vapi simulator listening on http://127.0.0.1:")
        base_url = line.rsplit(" ", 1)[1].strip()
        with httpx.Client(base_url=base_url, timeout=5) as client:
            created = client.post(
                "/call",
                json={"assistantId": "a", "phoneNumberId": "p", "customer": {"number": "+15551234567"}},
            )
            assert created.status_code == 201
            assert created.json()["monitor"]["controlUrl"].startswith(base_url)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()
