"""Storage fixtures: a real S3-compatible server (moto's standalone server) on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.recordings.storage import RecordingStorage, build_storage
from tests.servers import free_port

S3_BUCKET = "switchboard-test"
S3_SECRET = "moto-secret-key-never-in-messages"


def _wait_until_up(endpoint: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto_server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(endpoint, timeout=1):  # noqa: S310 (a loopback http URL we built)
                return
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise RuntimeError("moto_server did not answer within 20 s")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a moto S3 server with `S3_BUCKET` created; stopped at the end."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(endpoint, process)
        # moto does not check signatures, so a plain PUT creates the bucket.
        request = urllib.request.Request(f"{endpoint}/{S3_BUCKET}", method="PUT")  # noqa: S310
        with urllib.request.urlopen(request, timeout=5):  # noqa: S310
            pass
        yield endpoint
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def s3_environment(endpoint: str) -> dict[str, str]:
    """The ``AWS_*`` variables a deployment would set for an S3-compatible store on plain http."""
    return {
        "AWS_ACCESS_KEY_ID": "moto-access-key",
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> dict[str, str]:
    """Point obstore's environment configuration at moto (and drop any ``AWS_*`` of the machine)."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    environment = s3_environment(moto_endpoint)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


@pytest.fixture(params=["file", "memory", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RecordingStorage]:
    """Each backend as ``build_storage`` makes it; S3 under a fresh prefix of the moto bucket."""
    if request.param == "file":
        url = f"file://{tmp_path}/recordings"
    elif request.param == "memory":
        url = "memory://"
    else:
        request.getfixturevalue("s3_env")
        url = f"s3://{S3_BUCKET}/{uuid.uuid4().hex}"
    built = build_storage(url)
    try:
        yield built
    finally:
        await built.close()
