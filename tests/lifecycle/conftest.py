"""Lifecycle fixtures: both storage backends (local files, S3 on moto), row counts of everything a call owns."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Text, cast, func, or_, select

from service.db.engine import Database
from service.db.models import (
    Call,
    CallEvent,
    CallMetadata,
    IdempotencyRecord,
    Injection,
    Recording,
    RecordingSegment,
    RuleFiring,
    WebhookDelivery,
)
from service.recordings.storage import RecordingStorage, build_storage
from tests.recordings.conftest import S3_BUCKET, moto_endpoint, s3_env

__all__ = ["moto_endpoint", "s3_env"]


@pytest.fixture(params=["file", "s3"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Local files under the test's folder, or a fresh prefix of the moto bucket."""
    if request.param == "file":
        return f"file://{tmp_path}/recordings"
    request.getfixturevalue("s3_env")
    return f"s3://{S3_BUCKET}/{uuid.uuid4().hex}"


def storage_at(url: str) -> RecordingStorage:
    return build_storage(url)


async def rows_of(database_url: str, call_id: str) -> dict[str, int]:
    """How many rows of each table hold something of the call (outbound deliveries: by their payload)."""
    db = Database(database_url)
    data = WebhookDelivery.payload["data"]
    counts: dict[str, Any] = {
        "call": select(func.count()).where(Call.id == call_id),
        "call_event": select(func.count()).where(CallEvent.call_id == call_id),
        "call_metadata": select(func.count()).where(CallMetadata.call_id == call_id),
        "recording": select(func.count()).where(Recording.call_id == call_id),
        "recording_segment": select(func.count())
        .select_from(RecordingSegment)
        .where(RecordingSegment.recording_id.in_(select(Recording.id).where(Recording.call_id == call_id))),
        "injection": select(func.count()).where(Injection.call_id == call_id),
        "rule_firing": select(func.count()).where(RuleFiring.call_id == call_id),
        "idempotency_record": select(func.count()).where(
            or_(
                IdempotencyRecord.response_body["id"].as_string() == call_id,
                IdempotencyRecord.route.contains(call_id),
            )
        ),
        "webhook_delivery": select(func.count()).where(
            or_(data["id"].as_string() == call_id, data["callId"].as_string() == call_id),
            WebhookDelivery.event_type != "call.deleted",
        ),
        # Every payload, whatever its shape: the call id appears nowhere (JSON text, both databases).
        "webhook_delivery_text": select(func.count()).where(
            cast(WebhookDelivery.payload, Text).contains(call_id),
            WebhookDelivery.event_type != "call.deleted",
        ),
    }
    try:
        async with db.read() as session:
            return {name: int(await session.scalar(query) or 0) for name, query in counts.items()}
    finally:
        await db.dispose()
