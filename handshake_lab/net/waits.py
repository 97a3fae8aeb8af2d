"""Bounded waits that never lose the caller's cancellation.

Python 3.11's ``asyncio.wait_for`` returns the inner result when the caller is cancelled in the
same loop iteration as that result arrives (gh-86296, rewritten in 3.12). Ctrl-C and SIGTERM
reach a run as ``task.cancel()``, so an unlucky signal was dropped and the lab ran on to the end
with exit 0. ``asyncio.timeout`` counts cancellations and lets the caller's own propagate.
Likewise ``suppress(CancelledError)`` around ``await task`` swallows the caller's cancellation
along with the task's: ``cancel_and_wait`` waits without raising the task's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """``await aw`` for at most ``timeout`` s (``TimeoutError``); a cancel is never lost."""
    async with asyncio.timeout(timeout):
        return await aw


async def cancel_and_wait(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait for it to end; only the caller's own cancellation raises."""
    task.cancel()
    await asyncio.wait([task])


__all__ = ["cancel_and_wait", "wait_for"]
