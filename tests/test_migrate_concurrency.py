"""Several processes may run ``switchboard migrate`` at once (every replica does on start)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _migrate_at_once(database_url: str, processes: int) -> list[subprocess.CompletedProcess[str]]:
    env = {"PATH": "/usr/bin:/bin", "SWITCHBOARD_DATABASE_URL": database_url}
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "service.cli", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    results = []
    for process in started:
        out, err = process.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, out, err))
    return results


def _assert_all_migrated(results: list[subprocess.CompletedProcess[str]]) -> None:
    for result in results:
        assert result.returncode == 0, result.stderr
        assert "database is up to date" in result.stderr
    # Exactly one process ran each migration; the others waited for the lock and found nothing to do.
    assert sum("Running upgrade  -> 0001" in result.stderr for result in results) == 1


def test_three_concurrent_migrations_of_a_new_postgresql_database(new_postgresql_url: str) -> None:
    _assert_all_migrated(_migrate_at_once(new_postgresql_url, 3))


def test_three_concurrent_migrations_of_a_new_sqlite_file(tmp_path: Path) -> None:
    _assert_all_migrated(_migrate_at_once(f"sqlite+aiosqlite:///{tmp_path / 'new.db'}", 3))
