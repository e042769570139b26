"""``metadata.<key>=<value>`` filters: read from ``call_metadata``, kept in step with every write of a call's
metadata (placing, importing, webhooks), with the same meaning on both backends."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from litestar.testing import AsyncTestClient
from sqlalchemy import select

from service.calls.metadata import MAX_VALUE, candidates, encode, index_rows
from service.calls.rows import CallRows
from service.db.engine import Database
from service.db.models import Call, CallMetadata
from tests.conftest import WEBHOOK_SECRET

CALL_BODY = {"assistantId": "asst-1", "phoneNumberId": "pn-1", "customer": {"number": "+14155550123"}}


class Vapi:
    """Creates calls ``call-1``, ``call-2``…; ``GET /call/{id}`` answers with ``imported[id]``."""

    def __init__(self) -> None:
        self.created = 0
        self.imported: dict[str, dict[str, Any]] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.startswith(("/assistant/", "/phone-number/")):
            return httpx.Response(404, json={"message": "Couldn't Find Assistant"})  # no server of their own
        if request.method == "GET":
            call_id = request.url.path.rsplit("/", 1)[-1]
            return httpx.Response(200, json={"id": call_id, "status": "in-progress", **self.imported[call_id]})
        self.created += 1
        body = json.loads(request.content)
        return httpx.Response(
            201, json={"id": f"call-{self.created}", "status": "queued", "customer": body["customer"]}
        )


@pytest.fixture
def vapi() -> Vapi:
    return Vapi()


async def place(client: AsyncTestClient[Any], metadata: dict[str, Any]) -> str:
    response = await client.post("/v1/calls", json={**CALL_BODY, "metadata": metadata})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def found(client: AsyncTestClient[Any], **params: str) -> list[str]:
    response = await client.get("/v1/calls", params={f"metadata.{k}": v for k, v in params.items()})
    assert response.status_code == 200, response.text
    return [call["id"] for call in response.json()["data"]]


async def test_strings_numbers_and_booleans(client: AsyncTestClient[Any]) -> None:
    text = await place(client, {"tier": "3", "vip": "true", "region": "CA", "score": "2.50"})
    typed = await place(client, {"tier": 3, "vip": True, "region": "NY", "score": 2.5})
    floats = await place(client, {"tier": 3.0, "vip": False, "nested": {"a": 1}, "list": ["CA"], "none": None})
    assert await found(client, region="CA") == [text]
    assert await found(client, tier="3") == [floats, typed, text], "a number matches its text and equal numbers"
    assert await found(client, tier="3.0") == [floats, typed], "the string '3' is not the text '3.0'"
    assert await found(client, tier="3e0") == [floats, typed]
    assert await found(client, vip="true") == [typed, text]
    assert await found(client, vip="false") == [floats]
    assert await found(client, vip="True") == [], "JSON's true only"
    assert await found(client, score="2.5") == [typed]
    assert await found(client, score="2.50") == [typed, text]
    assert await found(client, tier="4") == []
    # Nulls, lists and objects match nothing, whatever their text.
    assert await found(client, none="null") == []
    assert await found(client, list="CA") == []
    assert await found(client, list='["CA"]') == []
    assert await found(client, nested='{"a": 1}') == []
    assert await found(client, tier="NaN") == []


async def test_long_values_and_any_key(client: AsyncTestClient[Any]) -> None:
    long = "x" * (MAX_VALUE * 5)
    long_call = await place(client, {"note": long, "big": 10**300, "with.dot": "kept"})
    await place(client, {"note": long[:-1]})
    assert await found(client, note=long) == [long_call]
    assert await found(client, big="1" + "0" * 300) == [long_call]
    assert await found(client, big="1e300") == [long_call]
    response = await client.get("/v1/calls/" + long_call)
    assert response.json()["metadata"]["with.dot"] == "kept", "unfilterable keys are kept, just not indexed"


async def test_filters_are_anded_and_paginate_newest_first(client: AsyncTestClient[Any]) -> None:
    ids = [await place(client, {"region": ["CA", "NY"][i % 2], "tier": i % 3, "n": i}) for i in range(12)]
    both = [call_id for i, call_id in enumerate(ids) if i % 2 == 0 and i % 3 == 1][::-1]
    assert await found(client, region="CA", tier="1") == both
    assert await found(client, tier="1", region="CA") == both
    assert await found(client, tier="1", region="CA", n="4") == [ids[4]]
    assert await found(client, tier="1", region="CA", n="5") == []
    ca = [call_id for i, call_id in enumerate(ids) if i % 2 == 0][::-1]
    for params in ({"metadata.region": "CA"}, {"metadata.region": "CA", "status": "queued"}):
        seen: list[str] = []
        cursor = None
        while True:
            page = (
                await client.get("/v1/calls", params={**params, "limit": 4, **({"cursor": cursor} if cursor else {})})
            ).json()
            seen += [call["id"] for call in page["data"]]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert seen == ca
    assert await found(client, region="CA", tier="3") == []


async def test_changed_metadata_no_longer_matches_its_old_value(
    client: AsyncTestClient[Any], vapi: Vapi, database_url: str
) -> None:
    # Tracked from a webhook first: the metadata comes from Vapi's call object.
    message = {"type": "status-update", "status": "ringing", "call": {"id": "hook-1", "metadata": {"crmId": "7"}}}
    webhook = {"X-Vapi-Secret": WEBHOOK_SECRET}
    assert (await client.post("/webhooks/vapi", json={"message": message}, headers=webhook)).status_code == 200
    assert await found(client, crmId="7") == ["hook-1"]
    # Imported: the call's metadata as Vapi has it.
    vapi.imported["imported-1"] = {"metadata": {"crmId": 8, "region": "CA"}}
    assert (await client.post("/v1/calls/import", json={"vapiCallId": "imported-1"})).status_code == 201
    assert await found(client, crmId="8") == ["imported-1"]
    # A call's metadata rewritten (by CallRows, the one writer of calls): only its new values match.
    db = Database(database_url)
    try:
        async with db.write() as session:
            rows_ = CallRows(session)
            call = await rows_.lock_one("imported-1", origin="webhook")
            call.call_metadata = {"crmId": "9"}
            await rows_.save()
        assert await found(client, crmId="8") == []
        assert await found(client, region="CA") == []
        assert await found(client, crmId="9") == ["imported-1"]
        async with db.read() as session:
            rows = (await session.scalars(select(CallMetadata).order_by(CallMetadata.call_id))).all()
            created = {c.id: c.created_at for c in (await session.scalars(select(Call))).all()}
    finally:
        await db.dispose()
    assert [(r.call_id, r.key, r.value, r.kind) for r in rows] == [
        ("hook-1", "crmId", "7", "s"),
        ("imported-1", "crmId", "9", "s"),
    ]
    assert all(row.created_at == created[row.call_id] for row in rows), "rows carry their call's created_at"


def test_encoding() -> None:
    assert encode("CA") == ("CA", "s")
    assert encode(3) == encode(3.0) == encode(3e0) == ("3", "n")
    assert encode(True) == ("true", "n")
    assert encode(0.1) == ("0.1", "n")
    assert encode(None) is None
    assert encode([1]) is None
    assert encode(float("inf")) is None
    assert encode("y" * (MAX_VALUE + 1))[1] == "S"  # type: ignore[index]
    assert candidates("42") == [("42", "s"), ("42", "n")]
    assert candidates("4.20") == [("4.20", "s"), ("4.2", "n")]
    assert len(candidates("[" * 100_000)) == 1, "not JSON (too deep): a plain string"
    assert encode(1e300) == encode(10**300)
    assert [row["key"] for row in index_rows("c", None, {"ok": 1, "not ok": 1, "x" * 101: 1, "nested": {}})] == ["ok"]
