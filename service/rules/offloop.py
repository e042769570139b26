"""Compiling and dry-running rules on a worker thread, with a deadline.

Both are CPU work on input a client sent: on the event loop a costly one would stall every request
(``/healthz`` included). The static limits (``celshape``, bounded templates) keep them short; the
thread and the deadline are the second line. A thread cannot be stopped, so the pool is small and
its own: a stuck compilation occupies one of its workers, never the loop or the default executor.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from service.errors import InvalidInputError

COMPILE_TIMEOUT_SECONDS = 2.0
DRY_RUN_TIMEOUT_SECONDS = 10.0
P = ParamSpec("P")
T = TypeVar("T")
_POOL = ThreadPoolExecutor(max_workers=2, thread_name_prefix="rules-offloop")


async def off_loop(timeout: float, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``work(*args, **kwargs)`` on the rules pool; 422 when it takes longer than ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    future = loop.run_in_executor(_POOL, functools.partial(work, *args, **kwargs))
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        raise InvalidInputError(f"the rule took longer than {timeout:g} s to check; simplify it") from None
