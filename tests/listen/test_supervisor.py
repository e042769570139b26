"""The listen supervisor's handling of sessions that crash."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from service.listen import supervisor as supervisor_module
from service.listen.supervisor import ListenSupervisor
from service.metrics import Metrics


class CrashingSession:
    """A session that records for ``runs_for`` seconds, then crashes."""

    ended = False

    def __init__(self, runs_for: float) -> None:
        self.runs_for = runs_for

    async def run(self) -> None:
        await asyncio.sleep(self.runs_for)
        raise RuntimeError("a bug")


class Leases:
    async def acquire(self, call_id: str) -> bool:
        return True

    async def release(self, call_id: str) -> None:
        return None


async def test_the_crash_backoff_doubles_for_repeated_crashes_and_starts_over_after_a_healthy_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(supervisor_module, "HEALTHY_SECONDS", 0.3)
    runs = [0.0, 0.0, 0.4, 0.0]
    supervisor = ListenSupervisor(
        lambda call_id, relay, target: cast(Any, CrashingSession(runs.pop(0))),
        leases=cast(Any, Leases()),
        journal=cast(Any, None),
        metrics=Metrics(),
        maintain_interval=60,
    )
    counts, backoffs = [], []
    for _ in range(4):
        before = time.monotonic()
        await supervisor._run("c1", True, None)
        after, crashes = time.monotonic(), supervisor._crashes["c1"]
        counts.append(crashes.count)
        backoffs.append((crashes.retry_at - after, crashes.retry_at - before))  # it crashed in between
    assert counts == [1, 2, 1, 2], "the third session ran a while: its crash is a first one again"
    for (shortest, longest), seconds in zip(backoffs, (2, 4, 2, 4), strict=True):
        assert shortest <= seconds <= longest
