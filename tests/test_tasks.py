"""The task owner: named, keyed, bounded tasks; failures reported; close drains, then cancels."""

from __future__ import annotations

import asyncio

import pytest
import structlog

from service.tasks import OwnerClosedError, TaskOwner


async def test_keyed_tasks_are_found_until_they_end() -> None:
    owner = TaskOwner("test")
    release = asyncio.Event()
    owner.spawn(release.wait(), name="a", key="call-1")
    assert "call-1" in owner
    assert len(owner) == 1
    release.set()
    assert await owner.wait(1.0)
    assert "call-1" not in owner
    assert len(owner) == 0


async def test_spawn_when_free_waits_for_a_slot() -> None:
    owner = TaskOwner("test", limit=2)
    gates = [asyncio.Event() for _ in range(3)]
    for gate in gates[:2]:
        await owner.spawn_when_free(gate.wait(), name="busy")
    assert owner.free == 0
    third = asyncio.create_task(owner.spawn_when_free(gates[2].wait(), name="third"))
    await asyncio.sleep(0.02)
    assert not third.done(), "a third task waits while two run"
    gates[0].set()
    await asyncio.wait_for(third, 1.0)
    assert len(owner) == 2
    for gate in gates:
        gate.set()
    assert await owner.wait(1.0)
    assert owner.free == 2


async def test_close_lets_tasks_finish_within_the_grace_then_cancels_the_rest() -> None:
    ended: list[str] = []

    async def quick() -> None:
        await asyncio.sleep(0.01)
        ended.append("quick")

    async def stuck() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            ended.append("stuck cancelled")

    done: list[int] = []
    owner = TaskOwner("test", on_done=lambda: done.append(1))
    owner.spawn(quick(), name="quick")
    owner.spawn(stuck(), name="stuck")
    cancelled = await owner.close(grace=0.2)
    assert cancelled == 1
    assert sorted(ended) == ["quick", "stuck cancelled"]
    assert len(owner) == 0
    assert len(done) == 2
    coroutine = quick()
    with pytest.raises(OwnerClosedError):
        owner.spawn(coroutine, name="late")


async def test_a_failing_task_is_reported_and_leaves_the_owner() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    owner = TaskOwner("test")
    with structlog.testing.capture_logs() as logs:
        owner.spawn(fail(), name="failing", key="k")
        await owner.wait(1.0)
        await asyncio.sleep(0)
    assert "k" not in owner
    assert any(entry["event"] == "background task failed" and entry["task"] == "test:failing" for entry in logs)
