"""A database outage mid-call: the recording continues, and listen events are written when it is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from service.simulator import CallScript, Utterance
from tests.conftest import POSTGRES_ADMIN_DSN
from tests.harness import running_stack

pytestmark = pytest.mark.slow

SCRIPT = CallScript(
    ring_after=0.2,
    answer_after=0.2,
    talk_seconds=14.0,
    turns=tuple(Utterance("user", f"Sentence number {n} of the customer.", at=1.0 + n) for n in range(12)),
)


async def block_database(name: str, blocked: bool) -> None:
    """Refuse new connections to ``name`` and cut the open ones (blocked), or allow them again."""
    admin = await asyncpg.connect(POSTGRES_ADMIN_DSN)
    try:
        await admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {"false" if blocked else "true"}')
        if blocked:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                name,
            )
    finally:
        await admin.close()


async def test_recording_survives_a_database_outage(postgresql_url: str, tmp_path: Path) -> None:
    database = postgresql_url.rsplit("/", 1)[-1]
    async with running_stack(postgresql_url, tmp_path, script=SCRIPT, pace=2) as stack:
        call_id = await stack.place_call()
        await stack.sim.wait_for_status(call_id, "in-progress")
        await asyncio.sleep(1.0)
        await block_database(database, blocked=True)
        try:
            await asyncio.sleep(2.5)
        finally:
            await block_database(database, blocked=False)
        await stack.sim.wait_for_status(call_id, "ended", timeout=40)
        recording = await stack.wait_for_recording(call_id, timeout=40)

        assert await stack.pcm(call_id) == b"".join(stack.sim.audio_sent_per_connection(call_id)), (
            "not a byte lost while the database was away"
        )
        assert recording["bytes"] == len(stack.sim.audio_sent(call_id))
        texts_sent = len(stack.sim.texts_sent(call_id))
        stored = [e for e in await stack.events(call_id) if e["source"] == "listen"]
        assert texts_sent > 10
        assert len(stored) == texts_sent, "every listen-socket text frame was stored once the database was back"
