"""Progress plumbing: model code reports through a plain callback in a worker thread; the async
server side turns the reports into StageProgress messages and cancels the work by making the
callback raise."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Generic, Protocol, TypeVar

from roar.errors import Cancelled
from roar.v1 import common_pb2

T = TypeVar("T")
log = logging.getLogger("roar.progress")


class ProgressCallback(Protocol):
    """`progress(percent, message)`, percent 0-100. Raises Cancelled when the work must stop."""

    def __call__(self, percent: float, message: str = "") -> None: ...


def no_progress(percent: float, message: str = "") -> None:
    """A callback for callers that do not watch progress."""


def scaled(progress: ProgressCallback, start: float, end: float) -> ProgressCallback:
    """Maps a sub-task's 0-100 onto [start, end] of its parent's percent."""

    def report(percent: float, message: str = "") -> None:
        progress(start + (end - start) * min(max(percent, 0.0), 100.0) / 100.0, message)

    return report


class EtaEstimator:
    """Seconds left from the rate of progress so far; None until there is a rate to trust."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._start: float | None = None
        self._start_percent = 0.0

    def update(self, percent: float) -> float | None:
        now = self._clock()
        if self._start is None:
            self._start, self._start_percent = now, percent
            return None
        done = percent - self._start_percent
        if done <= 0.5 or percent >= 100.0:
            return 0.0 if percent >= 100.0 else None
        return (now - self._start) * (100.0 - percent) / done


class StageRun(Generic[T]):
    """Runs `work(progress)` in a thread and yields its progress as StageProgress messages.

    `async for p in run: ...` ends when the work ends; then `run.result()` returns its value or
    raises its exception. Leaving the loop early (the RPC was cancelled, or its deadline passed)
    makes the next progress call raise Cancelled, which stops the work. `slots` bounds how many
    runs compute at once; a run waiting for a slot reports that it is queued.
    """

    def __init__(
        self,
        work: Callable[[ProgressCallback], T],
        slots: asyncio.Semaphore | None = None,
    ) -> None:
        self._work = work
        self._slots = slots
        self._cancel = threading.Event()
        self._future: asyncio.Future[T] | None = None

    def _progress_callback(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[common_pb2.StageProgress]
    ) -> ProgressCallback:
        eta = EtaEstimator()
        last = [0.0, ""]

        def progress(percent: float, message: str = "") -> None:
            if self._cancel.is_set():
                log.info("stopped at %.1f %% (%s): the call was cancelled", *last)
                raise Cancelled()
            last[:] = [percent, message]
            update = common_pb2.StageProgress(percent=percent, message=message)
            seconds = eta.update(percent)
            if seconds is not None:
                update.eta_seconds = seconds
            loop.call_soon_threadsafe(queue.put_nowait, update)

        return progress

    async def __aiter__(self) -> AsyncIterator[common_pb2.StageProgress]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[common_pb2.StageProgress] = asyncio.Queue()
        try:
            if self._slots is not None:
                if self._slots.locked():
                    yield common_pb2.StageProgress(percent=0.0, message="queued: waiting for a free worker")
                await self._slots.acquire()
            try:
                progress = self._progress_callback(loop, queue)
                self._future = loop.run_in_executor(None, self._work, progress)
            finally:
                if self._slots is not None:
                    # The slot is free only when the thread ends, even if this RPC was cancelled.
                    slots = self._slots
                    if self._future is None:
                        slots.release()
                    else:
                        self._future.add_done_callback(lambda _: slots.release())
            while not (self._future.done() and queue.empty()):
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({getter, self._future}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
        finally:
            self._cancel.set()
            if self._future is not None:
                # A run left early ends with Cancelled that nobody awaits: mark it retrieved.
                self._future.add_done_callback(lambda f: f.cancelled() or f.exception())

    def result(self) -> T:
        if self._future is None or not self._future.done():
            raise RuntimeError("StageRun.result() before the run finished")
        return self._future.result()
