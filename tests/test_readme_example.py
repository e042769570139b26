"""The README's worked example, run as written: its commands (only the ports, free ones instead of 8000
and 8001, and the path to ``switchboard`` replaced) place a call through the simulator and download its
recording."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.servers import free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash") or "/bin/bash"


def worked_example() -> list[str]:
    """The shell blocks of the README's worked example."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A worked example with the simulator", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", section, re.DOTALL)


def commands(block: str) -> list[str]:
    """The commands of a block: comments dropped, continued lines joined."""
    joined = re.sub(r"\\\n", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@contextmanager
def background(command: str, cwd: Path, env: dict[str, str], log: Path) -> Iterator[None]:
    with log.open("wb") as out:
        process = subprocess.Popen(
            [BASH, "-c", command], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        yield
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # its own session: bash and what it started
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def wait_for_port(port: int, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    pytest.fail(f"nothing listens on {port}:\n{log.read_text(errors='replace')}")


def test_the_worked_example_runs_as_written(tmp_path: Path) -> None:
    servers, client = worked_example()
    api, simulator = free_port(), free_port()

    def localise(text: str) -> str:
        text = text.replace(".venv/bin/switchboard", f"{sys.executable} -m service.cli")
        return text.replace("8000", str(api)).replace("8001", str(simulator))

    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}
    simulate, serve = (localise(command) for command in commands(servers))
    assert "simulate" in simulate
    assert serve.endswith("-m service.cli serve")
    serve += f" --port {api}"  # the README's relies on the default, 8000
    with (
        background(simulate, tmp_path, env, tmp_path / "simulate.log"),
        background(serve, tmp_path, env, tmp_path / "serve.log"),
    ):
        wait_for_port(simulator, tmp_path / "simulate.log")
        wait_for_port(api, tmp_path / "serve.log")
        result = subprocess.run(
            [BASH, "-euo", "pipefail", "-c", localise(client)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert result.returncode == 0, result.stderr
    assert '"status":"completed"' in result.stdout, "the recording is final and whole"
    for name in ("call.wav", "customer.wav"):
        wav = (tmp_path / name).read_bytes()
        assert wav[:4] == b"RIFF"
        assert len(wav) > 16_000 * 2 * 10, f"{name} holds the call's audio"
