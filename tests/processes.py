"""``switchboard serve`` as a real child process, for kill -9 and multi-replica tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import ADMIN_KEY, VAPI_KEY, WEBHOOK_SECRET
from tests.harness import eventually


@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path

    def kill(self) -> None:
        """kill -9: no shutdown, no flush, no lease release."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def serve_env(database_url: str, storage_dir: Path, vapi_base_url: str, port: int, **extra: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(storage_dir)),
        "SWITCHBOARD_DATABASE_URL": database_url,
        "SWITCHBOARD_STORAGE_URL": f"file://{storage_dir}",
        "SWITCHBOARD_VAPI_BASE_URL": vapi_base_url,
        "SWITCHBOARD_VAPI_API_KEY": VAPI_KEY,
        "SWITCHBOARD_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "SWITCHBOARD_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "SWITCHBOARD_ADMIN_API_KEY": ADMIN_KEY,
        "SWITCHBOARD_LISTEN_LEASE_SECONDS": "2",
        "SWITCHBOARD_LOG_LEVEL": "info",
        **extra,
    }


@asynccontextmanager
async def serve_process(
    env: dict[str, str], port: int, log_path: Path, *args: str, ready: float = 30
) -> AsyncIterator[ServeProcess]:
    """Start ``switchboard serve [args]`` and wait until ``/healthz`` answers; kill it on exit if still alive."""
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(  # noqa: ASYNC220 - started once, waited on below
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port), *args],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    running = ServeProcess(process, f"http://127.0.0.1:{port}", log_path)

    async def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"switchboard serve exited at start-up:\n{running.log()}")
        with suppress(httpx.TransportError):
            return (await client.get(f"{running.base_url}/healthz")).status_code == 200
        return False

    try:
        async with httpx.AsyncClient() as client:
            await eventually(healthy, ready, interval=0.1, what="switchboard serve answers /healthz")
        yield running
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
