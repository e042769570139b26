"""Start-up checks: a database, storage or port that cannot be used stops the CLI within 20 s with
exit code 2 and one line naming what to fix — never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.db.migrate import upgrade
from tests.conftest import POSTGRES_ADMIN_DSN
from tests.servers import bind_loopback, free_port

POSTGRES = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert time.monotonic() - started < 20, "the contract: an unusable configuration stops within 20 s"
    return result


def assert_refused(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Exit code 2 and a single line that says what to fix."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0]
    return lines[0]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with bind_loopback() as sock:
        sock.listen()
        yield int(sock.getsockname()[1])


def sqlite_env(tmp_path: Path) -> dict[str, str]:
    return {
        "SWITCHBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'db' / 'switchboard.db'}",
        "SWITCHBOARD_STORAGE_URL": f"file://{tmp_path / 'recordings'}",
    }


def test_an_unreachable_database_is_named(tmp_path: Path) -> None:
    url = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/switchboard"
    for command in (["serve", "--port", str(free_port())], ["migrate"]):
        result = run_cli(*command, **{**sqlite_env(tmp_path), "SWITCHBOARD_DATABASE_URL": url})
        line = assert_refused(result, "cannot reach the database 'switchboard'", "SWITCHBOARD_DATABASE_URL")
        assert "is the server running?" in line


def test_an_unknown_database_is_named(tmp_path: Path) -> None:
    url = f"{POSTGRES}/switchboard_no_such_database"
    result = run_cli("serve", "--port", str(free_port()), **{**sqlite_env(tmp_path), "SWITCHBOARD_DATABASE_URL": url})
    assert_refused(result, "database 'switchboard_no_such_database'", "does not exist", "SWITCHBOARD_DATABASE_URL")


def test_a_database_never_migrated_says_switchboard_migrate(tmp_path: Path, new_postgresql_url: str) -> None:
    env = {**sqlite_env(tmp_path), "SWITCHBOARD_DATABASE_URL": new_postgresql_url}
    result = run_cli("serve", "--port", str(free_port()), **env)
    assert_refused(result, "is not migrated", "run `switchboard migrate`", "SWITCHBOARD_AUTO_MIGRATE")
    result = run_cli("apikeys", "list", **env)
    assert_refused(result, "is not migrated")


def test_a_database_behind_this_version_says_switchboard_migrate(tmp_path: Path, new_postgresql_url: str) -> None:
    upgrade(new_postgresql_url, "0007")
    env = {**sqlite_env(tmp_path), "SWITCHBOARD_DATABASE_URL": new_postgresql_url}
    result = run_cli("serve", "--port", str(free_port()), **env)
    assert_refused(result, "is at migration 0007, not", "run `switchboard migrate`")


def test_storage_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {**sqlite_env(tmp_path), "SWITCHBOARD_STORAGE_URL": f"file://{blocker / 'recordings'}"}
    result = run_cli("serve", "--port", str(free_port()), **env)
    assert_refused(result, f"the recordings folder {blocker / 'recordings'} is not writable", "SWITCHBOARD_STORAGE_URL")


def test_a_sqlite_folder_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = {**sqlite_env(tmp_path), "SWITCHBOARD_DATABASE_URL": f"sqlite+aiosqlite:///{blocker / 'switchboard.db'}"}
    for command in (["serve", "--port", str(free_port())], ["migrate"]):
        assert_refused(
            run_cli(*command, **env), "cannot create the folder of the SQLite file", "SWITCHBOARD_DATABASE_URL"
        )


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path, busy_port: int) -> None:
    result = run_cli("serve", "--port", str(busy_port), **sqlite_env(tmp_path))
    assert_refused(result, f"port {busy_port} on 127.0.0.1 is in use", "--port")
    assert not (tmp_path / "db").exists(), "refused before migrating anything"
    assert_refused(run_cli("simulate", "--port", str(busy_port)), f"port {busy_port} on 127.0.0.1 is in use")


def test_json_logs_carry_the_refusal_as_a_json_line(tmp_path: Path, busy_port: int) -> None:
    result = run_cli("serve", "--port", str(busy_port), **sqlite_env(tmp_path), SWITCHBOARD_LOG_FORMAT="json")
    assert result.returncode == 2
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert lines[-1]["level"] == "error"
    assert f"port {busy_port} on 127.0.0.1 is in use" in lines[-1]["event"]


def test_a_misspelt_variable_is_named_with_the_closest_valid_one(tmp_path: Path, busy_port: int) -> None:
    env = {**sqlite_env(tmp_path), "SWITCHBOARD_LOG_LEVL": "debug", "SWITCHBOARD_NOTHING_LIKE_IT": "1"}
    result = run_cli("serve", "--port", str(busy_port), **env)
    assert result.returncode == 2
    assert "SWITCHBOARD_LOG_LEVL is set but is not a Switchboard setting" in result.stderr
    assert "did you mean SWITCHBOARD_LOG_LEVEL?" in result.stderr
    assert "SWITCHBOARD_NOTHING_LIKE_IT is set but is not a Switchboard setting: it is ignored\n" in result.stderr


def test_a_free_port_is_bound_and_kept(tmp_path: Path) -> None:
    """The checks pass on a usable setup: serve migrates the embedded database and listens."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
        env={"PATH": "/usr/bin:/bin", **sqlite_env(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert process.poll() is None, process.communicate()[1]
            time.sleep(0.1)
        else:
            pytest.fail("serve did not listen within 30 s")
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert process.returncode in (0, -15), err  # uvicorn re-raises SIGTERM once it has shut down
    assert "Traceback" not in err


def test_workers_on_sqlite_are_refused(tmp_path: Path) -> None:
    result = run_cli("serve", "--port", str(free_port()), "--workers", "2", **sqlite_env(tmp_path))
    assert_refused(result, "--workers 2 needs PostgreSQL", "SQLite serves one process")
    assert not (tmp_path / "db").exists(), "refused before migrating anything"


def test_workers_without_redis_are_refused(tmp_path: Path) -> None:
    env = {**sqlite_env(tmp_path), "SWITCHBOARD_DATABASE_URL": f"{POSTGRES}/postgres"}
    result = run_cli("serve", "--port", str(free_port()), "--workers", "3", **env)
    assert_refused(result, "--workers 3 needs SWITCHBOARD_REDIS_URL")


def test_an_unreachable_redis_is_named(tmp_path: Path) -> None:
    env = {**sqlite_env(tmp_path), "SWITCHBOARD_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    line = assert_refused(run_cli("serve", "--port", str(free_port()), **env), "cannot reach the Redis at 127.0.0.1")
    assert "SWITCHBOARD_REDIS_URL" in line
    assert not (tmp_path / "db").exists(), "refused before migrating anything"


@pytest.mark.parametrize("workers", ["0", "-1", "two"])
def test_workers_must_be_a_positive_number(workers: str) -> None:
    result = run_cli("serve", "--workers", workers)
    assert result.returncode == 2
    assert "argument --workers: expected a whole number of 1 or more" in result.stderr
