"""Measuring how soon stage work stops once its call is left, as a cancelled call leaves it."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

from roar.errors import Cancelled
from roar.progress import StageRun


async def stop_at_first_update(work: Callable[[Callable[..., None]], object]) -> float:
    """Runs `work` in a StageRun, leaves the run at its first progress update as a cancelled call
    does, and returns the seconds until the work raised Cancelled (failing if it never did)."""
    stopped = threading.Event()

    def watched(progress: Callable[..., None]) -> object:
        try:
            return work(progress)
        except Cancelled:
            stopped.set()
            raise

    async for _ in StageRun(watched):
        break
    left_at = time.monotonic()
    assert await asyncio.to_thread(stopped.wait, 30), "the work did not stop"
    return time.monotonic() - left_at
