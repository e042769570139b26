"""API keys: the CLI, scopes (401 vs 403), monitor URLs only for admin keys."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import AsyncTestClient

from service.apikeys.service import ApiKeyService, hash_key, parse_scopes
from service.db.engine import Database
from service.errors import InvalidInputError
from tests.conftest import ADMIN_KEY, WEBHOOK_SECRET
from tests.harness import app_client, build_app


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SWITCHBOARD_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "service.cli", "apikeys", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_creates_lists_and_revokes_keys(database_url: str) -> None:
    created = run_cli(database_url, "create", "--name", "crm", "--scopes", "calls:read,calls:write")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("sb_")
    assert len(key) > 40
    assert key not in created.stderr
    listed = run_cli(database_url, "list")
    assert "crm" in listed.stdout
    assert "calls:read,calls:write" in listed.stdout
    assert key not in listed.stdout, "a key is shown once, at creation"
    assert run_cli(database_url, "revoke", key[:10]).returncode == 0
    assert "revoked" in run_cli(database_url, "list").stdout
    bad = run_cli(database_url, "create", "--name", "x", "--scopes", "calls:read,everything")
    assert bad.returncode == 1
    assert "unknown scope(s) everything" in bad.stderr


def test_cli_revokes_by_the_prefix_as_listed(database_url: str) -> None:
    assert run_cli(database_url, "create", "--name", "ops", "--scopes", "calls:read").returncode == 0
    (line,) = (line for line in run_cli(database_url, "list").stdout.splitlines() if " ops " in line)
    shown = line.split()[1]
    assert shown.endswith("…")
    revoked = run_cli(database_url, "revoke", shown)
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in run_cli(database_url, "list").stdout


def test_two_active_keys_may_not_share_a_name(database_url: str) -> None:
    first = run_cli(database_url, "create", "--name", "crm", "--scopes", "calls:read")
    assert first.returncode == 0, first.stderr
    second = run_cli(database_url, "create", "--name", " crm ", "--scopes", "calls:write")
    assert second.returncode == 1
    assert second.stderr.strip() == (
        "switchboard: an active key is already named 'crm': choose another name or revoke it first"
    )
    assert len([line for line in run_cli(database_url, "list").stdout.splitlines() if " crm " in line]) == 1
    assert run_cli(database_url, "revoke", first.stdout.strip().splitlines()[-1][:10]).returncode == 0
    assert run_cli(database_url, "create", "--name", "crm", "--scopes", "calls:read").returncode == 0, "rotation"


def test_scopes_are_parsed_strictly() -> None:
    assert parse_scopes(" calls:write,calls:read ,calls:read") == ["calls:read", "calls:write"]
    with pytest.raises(InvalidInputError):
        parse_scopes("")


@pytest.fixture
async def keys(database_url: str) -> AsyncIterator[ApiKeyService]:
    db = Database(database_url)
    yield ApiKeyService(db, admin_key=None)
    await db.dispose()


@pytest.fixture
async def client(database_url: str) -> AsyncIterator[AsyncTestClient[Any]]:
    async with app_client(build_app(database_url), key=None) as test_client:
        yield test_client


async def test_keys_are_stored_hashed(keys: ApiKeyService, database_url: str) -> None:
    row, key = await keys.create("reader", ["calls:read"])
    assert row.key_hash == hash_key(key)
    assert key not in str(row.__dict__)


async def test_read_only_key_cannot_place_calls_or_see_monitor_urls(
    keys: ApiKeyService, client: AsyncTestClient[Any]
) -> None:
    _, reader = await keys.create("reader", ["calls:read"])
    message = {
        "message": {
            "type": "status-update",
            "status": "in-progress",
            "call": {
                "id": "c1",
                "status": "ended",
                "monitor": {"listenUrl": "ws://127.0.0.1:9/secret-listen", "controlUrl": "http://127.0.0.1:9/ctl"},
            },
        }
    }
    assert (await client.post("/webhooks/vapi", json=message, headers={"X-Vapi-Secret": WEBHOOK_SECRET})).is_success
    as_reader = {"Authorization": f"Bearer {reader}"}
    placed = await client.post("/v1/calls", json={}, headers=as_reader)
    assert placed.status_code == 403
    assert "calls:write" in placed.json()["detail"]
    call = (await client.get("/v1/calls/c1", headers=as_reader)).json()
    assert call["monitor"] == {"listen": True, "control": True}
    listed = (await client.get("/v1/calls", headers=as_reader)).text
    assert "secret-listen" not in listed
    as_admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
    admin_view = (await client.get("/v1/calls/c1", headers=as_admin)).json()
    assert admin_view["monitor"]["listenUrl"] == "ws://127.0.0.1:9/secret-listen"


async def test_revoked_and_unknown_keys_are_401(keys: ApiKeyService, client: AsyncTestClient[Any]) -> None:
    row, key = await keys.create("temp", ["admin"])
    assert (await client.get("/v1/calls", headers={"Authorization": f"Bearer {key}"})).status_code == 200
    await keys.revoke(str(row.id))
    revoked = await client.get("/v1/calls", headers={"Authorization": f"Bearer {key}"})
    assert revoked.status_code == 401
    assert revoked.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/v1/calls", headers={"Authorization": "Bearer sb_nope"})).status_code == 401


async def test_recordings_scope_is_separate(keys: ApiKeyService, client: AsyncTestClient[Any], tmp_path: Path) -> None:
    _, calls_only = await keys.create("calls", ["calls:read"])
    response = await client.get("/v1/calls/c1/recording", headers={"Authorization": f"Bearer {calls_only}"})
    assert response.status_code == 403
