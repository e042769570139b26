"""Owned background tasks: the one shutdown rule every owner (sessions, firings, deliveries) follows."""

from __future__ import annotations

import asyncio
from collections.abc import Collection
from typing import Any


async def finish(tasks: Collection[asyncio.Task[Any]], timeout: float) -> int:
    """Give ``tasks`` up to ``timeout`` seconds to end, cancel the ones still running, and wait for all
    of them (their errors are theirs to report); the number cancelled."""
    if not tasks:
        return 0
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for task in pending:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return len(pending)
