import json
from pathlib import Path

from service.apikeys.service import SCOPES
from service.cli import openapi_document

COMMITTED = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_code() -> None:
    assert COMMITTED.read_text() == openapi_document(), (
        "openapi/openapi.json is stale: run `switchboard openapi --out openapi/openapi.json`"
    )


def test_every_operation_has_a_stable_id_and_v1_routes_need_a_key() -> None:
    document = json.loads(openapi_document())
    operations = [
        (path, method, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and "responses" in operation
    ]
    assert operations
    ids = [operation["operationId"] for _, _, operation in operations]
    assert len(ids) == len(set(ids))
    assert all(not operation_id.startswith(("Get", "Post")) for operation_id in ids), "explicit ids, not generated"
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    for path, _, operation in operations:
        if path.startswith("/v1/"):
            (requirement,) = operation["security"]
            (scope,) = requirement["apiKey"]
            assert scope in SCOPES, f"{path} declares no valid scope"
        elif path in ("/healthz", "/readyz", "/metrics"):
            assert "security" not in operation
