from pathlib import Path

from service.recordings.storage import LocalStorage
from tests.harness import app_client, build_app


async def test_ready_when_database_and_storage_are_reachable(database_url: str, tmp_path: Path) -> None:
    async with app_client(build_app(database_url, storage=LocalStorage(tmp_path)), key=None) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok", "checks": {}}
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json() == {"status": "ok", "checks": {"database": "ok", "storage": "ok"}}


async def test_not_ready_when_storage_is_unusable(database_url: str, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the recordings folder should be")
    async with app_client(build_app(database_url, storage=LocalStorage(blocker / "recordings")), key=None) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503
        body = ready.json()
        assert body["status"] == "unavailable"
        assert body["checks"]["database"] == "ok"
        assert body["checks"]["storage"].startswith("failed")
        assert (await client.get("/healthz")).status_code == 200, "liveness does not depend on storage"
