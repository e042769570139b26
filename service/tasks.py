"""Owned background tasks: every long-lived or fire-and-forget task of the service has an owner.

Modelled on aiojobs' scheduler and Litestar's channels plugin. A :class:`TaskOwner` keeps a reference
to each task it spawns (named, optionally keyed), bounds how many run at once, reports every failure,
and on :meth:`TaskOwner.close` refuses new work, lets running tasks finish within a grace period,
cancels the rest and awaits them all. The parts that run for the whole life of the app implement
:class:`Background`; the app's lifespan starts them in order and closes them in reverse.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Hashable, Sequence
from typing import Any, Protocol, TypeVar

import structlog

log = structlog.get_logger(__name__)
T = TypeVar("T")


class Background(Protocol):
    """A part of the service with background work, owned by the app's lifespan."""

    async def start(self) -> None: ...

    async def close(self, timeout: float) -> None:
        """Stop taking work, finish what runs within ``timeout`` seconds, cancel the rest."""


class OwnerClosedError(RuntimeError):
    """The owner is closing: it takes no new task."""


class TaskOwner:
    """Spawns, tracks, bounds and closes a family of tasks (see the module docstring)."""

    def __init__(self, name: str, *, limit: int | None = None, on_done: Callable[[], None] | None = None) -> None:
        """``limit``: how many tasks may run at once; ``on_done``: called after each task ended and left
        the owner (e.g. to wake whoever waits for a free slot)."""
        self._name = name
        self._limit = limit
        self._on_done = on_done
        self._tasks: dict[asyncio.Task[Any], Hashable | None] = {}
        self._keys: dict[Hashable, asyncio.Task[Any]] = {}
        self._slots = asyncio.Semaphore(limit) if limit is not None else None
        self._closed = False

    def __len__(self) -> int:
        return len(self._tasks)

    def __contains__(self, key: Hashable) -> bool:
        """Whether a task spawned with ``key`` is still running."""
        return key in self._keys

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def free(self) -> int | None:
        """How many more tasks may run now (None: unbounded)."""
        return None if self._limit is None else max(0, self._limit - len(self._tasks))

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str, key: Hashable | None = None) -> None:
        """Start ``coro`` as a task named ``<owner>:<name>``; :class:`OwnerClosedError` once closing.

        Over the limit, the task still starts (the caller checks :attr:`free` when it must not);
        :meth:`spawn_when_free` waits for a slot instead."""
        _ = self._start(coro, name=name, key=key)

    def _start(self, coro: Coroutine[Any, Any, Any], *, name: str, key: Hashable | None = None) -> asyncio.Task[Any]:
        if self._closed:
            coro.close()
            raise OwnerClosedError(f"{self._name} is closed")
        task = asyncio.get_running_loop().create_task(coro, name=f"{self._name}:{name}")
        self._tasks[task] = key
        if key is not None:
            self._keys[key] = task
        task.add_done_callback(self._done)
        return task

    async def spawn_when_free(self, coro: Coroutine[Any, Any, Any], *, name: str) -> None:
        """:meth:`spawn` once fewer than ``limit`` tasks run (backpressure on the caller)."""
        if self._slots is None:
            _ = self._start(coro, name=name)
            return
        try:
            await self._slots.acquire()
        except BaseException:
            coro.close()
            raise
        try:
            task = self._start(coro, name=name)
        except BaseException:
            self._slots.release()
            raise
        task.add_done_callback(lambda _: self._release())

    def _release(self) -> None:
        assert self._slots is not None
        self._slots.release()

    def _done(self, task: asyncio.Task[Any]) -> None:
        key = self._tasks.pop(task, None)
        if key is not None and self._keys.get(key) is task:
            del self._keys[key]
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task failed", task=task.get_name(), exc_info=exc)
        if self._on_done is not None:
            self._on_done()

    async def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for every task to end on its own; True if they all did."""
        if not self._tasks:
            return True
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        return not pending

    async def close(self, grace: float = 0.0) -> int:
        """Refuse new tasks, give running ones ``grace`` seconds, cancel the rest, await all; how many
        were cancelled."""
        self._closed = True
        if grace > 0:
            await self.wait(grace)
        cancelled = 0
        while self._tasks:
            tasks = set(self._tasks)
            for task in tasks:
                cancelled += task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for task in tasks:  # in case a done callback has not run yet
                self._tasks.pop(task, None)
        return cancelled


async def run_claim_loop(
    name: str,
    *,
    workers: TaskOwner,
    wake: asyncio.Event,
    poll_interval: float,
    closing: Callable[[], bool],
    claim: Callable[[int], Coroutine[Any, Any, Sequence[T]]],
    work: Callable[[T], tuple[Coroutine[Any, Any, Any], str]],
    next_due_in: Callable[[], Coroutine[Any, Any, float | None]],
) -> None:
    """The loop of a durable work queue (rows claimed from a table): claim as many as ``workers`` has
    free slots, run each as an owned task, claim again at once while there were some, else sleep until
    the earliest pending row is due, the poll interval, or ``wake`` (a commit that queued work, a slot
    freed). A failed claim (the database briefly away) waits for the next poll."""
    while not closing():
        wake.clear()
        wait = poll_interval
        free = workers.free or 0
        if free > 0:
            try:
                claimed = await claim(free)
                for row in claimed:
                    coroutine, task_name = work(row)
                    workers.spawn(coroutine, name=task_name)
                if claimed:
                    continue
                due = await next_due_in()
                if due is not None:
                    wait = min(wait, due)
            except Exception as exc:
                log.warning(f"{name} claim failed", error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(wait, 0.01)):
                await wake.wait()
