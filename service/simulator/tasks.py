"""A minimal task owner: every background task of the simulator is spawned, tracked and awaited here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

logger = logging.getLogger(__name__)


class TaskOwner:
    """Keeps a reference to each task it spawns, reports failures, and cancels then awaits them on close."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, None], *, name: str) -> None:
        """Start ``coro`` as a named task owned by this owner."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"{self._name} is closed")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._name}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._on_done)

    def _on_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            logger.error("task %s failed", task.get_name(), exc_info=exc)

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every task to finish on its own; True if they all did."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending

    async def aclose(self, grace: float = 0.0) -> None:
        """Refuse new tasks, let running ones finish for ``grace`` seconds, cancel the rest, await all."""
        self._closed = True
        if grace > 0:
            await self.wait(grace)
        while self._tasks:
            tasks = set(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks -= tasks
