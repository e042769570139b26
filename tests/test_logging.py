"""One log format: with ``SWITCHBOARD_LOG_FORMAT=json`` every line the process writes is a JSON object,
uvicorn's and alembic's included; query strings (``?token=<API key>``) never reach the log."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from service.logging import configure_logging, redact_query_strings
from service.simulator import CallScript, SimulatorServer, VapiSimulator
from tests.conftest import ADMIN_KEY, VAPI_KEY
from tests.harness import CALL
from tests.processes import serve_env, serve_process
from tests.servers import free_port

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            '127.0.0.1:5 - "WebSocket /v1/calls/c1/listen?token=sb_abc" [accepted]',
            '127.0.0.1:5 - "WebSocket /v1/calls/c1/listen?[redacted]" [accepted]',
        ),
        ("GET https://x.test/a?b=1&c=2 done", "GET https://x.test/a?[redacted] done"),
        ("connection open", "connection open"),
        ("what? nothing", "what? nothing"),
    ],
)
def test_query_strings_are_masked(line: str, expected: str) -> None:
    assert redact_query_strings(line) == expected


def test_standard_library_lines_render_as_json(capfd: pytest.CaptureFixture[str]) -> None:
    configure_logging("info", "json")
    try:
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", "/v1/calls?token=sb_x", "1.1", 200
        )
        logging.getLogger("uvicorn.error").info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", "/l?token=sb_y")
        try:
            raise ValueError("boom at /v1/calls?token=sb_z")
        except ValueError:
            logging.getLogger("litestar").exception("failed")
    finally:
        configure_logging("info")
    access, websocket, failure = (json.loads(line) for line in capfd.readouterr().err.splitlines())
    assert access == access | {"event": "request", "method": "GET", "path": "/v1/calls", "status": 200}
    assert access["logger"] == "uvicorn.access"
    assert websocket["event"] == '127.0.0.1:5 - "WebSocket /l?[redacted]" [accepted]'
    assert failure["level"] == "error"
    assert "ValueError: boom at /v1/calls?[redacted]" in failure["exception"], "a traceback stays in its line"


async def _listen_briefly(url: str) -> int:
    """Open a live listen socket with ``?token=`` (as the console does) and read some audio."""
    received = 0
    async with connect(url) as socket:
        try:
            async with asyncio.timeout(2):
                async for message in socket:
                    received += len(message)
        except (TimeoutError, ConnectionClosed):
            pass
    return received


@pytest.mark.slow
async def test_every_line_of_serve_is_a_json_object(tmp_path: Path) -> None:
    """Start (with migrations) to shutdown: requests, a call with a live listener, its recording."""
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'new.db'}"  # a new database: migrations run and log
    script = CallScript(ring_after=0.2, answer_after=0.2, talk_seconds=8.0, turns=())  # 4 s at pace 2
    async with SimulatorServer(VapiSimulator(api_key=VAPI_KEY, pace=2.0, script=script)) as simulator:
        port = free_port()
        env = serve_env(
            database_url,
            tmp_path / "recordings",
            simulator.base_url,
            port,
            SWITCHBOARD_LOG_FORMAT="json",
            SWITCHBOARD_ACCESS_LOG="true",
        )
        log_path = tmp_path / "serve.log"
        async with httpx.AsyncClient() as client, serve_process(env, port, log_path) as serve:
            created = await client.post(f"{serve.base_url}/v1/calls", json=CALL, headers=AUTH)
            assert created.status_code == 201, created.text
            call_id = created.json()["id"]
            await simulator.sim.wait_for_status(call_id, "in-progress")
            ws_url = serve.base_url.replace("http://", "ws://") + f"/v1/calls/{call_id}/listen?token={ADMIN_KEY}"
            assert await _listen_briefly(ws_url) > 0
            assert (await client.get(f"{serve.base_url}/v1/calls?limit=1&status=ended", headers=AUTH)).is_success
            await simulator.sim.wait_for_status(call_id, "ended", timeout=30)
            async with asyncio.timeout(30):
                while "recording completed" not in serve.log():
                    await asyncio.sleep(0.1)
        output = log_path.read_text()

    lines = output.splitlines()
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            pytest.fail(f"line {number} is not JSON: {line!r}")
        assert isinstance(records[-1], dict), line
    events = [record["event"] for record in records]
    assert any(event.startswith("Running upgrade") for event in events), "alembic logs in JSON"
    assert "Application startup complete." in events, "uvicorn logs in JSON"
    requests = [record for record in records if record["event"] == "request"]
    listed = {"method": "GET", "path": "/v1/calls", "status": 200}
    assert any(listed.items() <= request.items() for request in requests), "the access log, query masked"
    assert any(request["path"] == "/webhooks/vapi" for request in requests)
    (ended,) = (record for record in records if record["event"] == "call ended")
    assert ended["call_id"] == call_id
    assert ended["ended_reason"] == "customer-ended-call"
    assert ended["duration_seconds"] > 0
    (recorded,) = (record for record in records if record["event"] == "recording completed")
    assert recorded["call_id"] == call_id
    assert recorded["bytes"] > 0
    assert recorded["duration_seconds"] > 0
    assert recorded["gaps"] == 0
    assert "switchboard stopped" in events
    assert events[-1].startswith("Finished server process"), "shutdown logs in JSON to the last line"
    assert any(f"WebSocket /v1/calls/{call_id}/listen?[redacted]" in event for event in events)
    assert ADMIN_KEY not in output, "an API key in a query string reached the log"
    assert "token=" not in output
