"""Progress plumbing: model code reports through a plain callback in a worker thread; the async
server side turns the reports into StageProgress messages and cancels the work by making the
callback raise.

Work between two progress reports (a whole Whisper generate, a demucs segment, a long text
alignment) must stop too: the worker thread knows its run's cancel event, `check_cancelled()` raises
Cancelled once it is set, and `stop_on_cancel(model)` makes every forward pass of a torch model's
modules call it, so a cancelled model stops within one layer's compute.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from roar.errors import Cancelled
from roar.v1 import common_pb2

if TYPE_CHECKING:
    from torch import nn

T = TypeVar("T")
ModuleT = TypeVar("ModuleT", bound="nn.Module")
log = logging.getLogger("roar.progress")

# The cancel event of the StageRun whose work this thread is doing; None outside a run.
_run_cancelled: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "run_cancelled", default=None
)


def check_cancelled() -> None:
    """Raises Cancelled when the StageRun this thread works for was cancelled (its call ended or
    its deadline passed); does nothing outside a StageRun. Cheap: call it in any long loop."""
    cancelled = _run_cancelled.get()
    if cancelled is not None and cancelled.is_set():
        raise Cancelled()


def _check_cancelled_hook(module: object, inputs: object) -> None:
    check_cancelled()


def stop_on_cancel(model: ModuleT) -> ModuleT:
    """Makes each forward pass of each of the model's modules check for cancellation first (a
    forward pre-hook), so that a cancelled run stops inside a forward pass, between two layers,
    and between two decoding steps of a generate(). Install once, where the model is loaded."""
    for module in model.modules():
        module.register_forward_pre_hook(_check_cancelled_hook)
    return model


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
    makes the next progress call, check_cancelled() call or hooked forward pass raise Cancelled,
    which stops the work. `slots` bounds how many runs compute at once; a run waiting for a slot
    reports that it is queued, and a slot is free again as soon as its work has stopped.
    """

    def __init__(
        self,
        work: Callable[[ProgressCallback], T],
        slots: asyncio.Semaphore | None = None,
    ) -> None:
        self._work = work
        self._slots = slots
        self._cancel = threading.Event()
        self._cancelled_at = 0.0
        self._reached = (0.0, "")  # the last progress the work reported
        self._future: asyncio.Future[T] | None = None

    def _run_work(self, progress: ProgressCallback) -> T:
        """The work, in a worker thread that knows this run's cancel event."""
        token = _run_cancelled.set(self._cancel)
        try:
            return self._work(progress)
        except Cancelled:
            log.info(
                "stopped at %.1f %% (%s), %.2f s after its call ended",
                *self._reached,
                time.monotonic() - self._cancelled_at,
            )
            raise
        finally:
            _run_cancelled.reset(token)

    def _progress_callback(
        self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[common_pb2.StageProgress]
    ) -> ProgressCallback:
        eta = EtaEstimator()

        def progress(percent: float, message: str = "") -> None:
            if self._cancel.is_set():
                raise Cancelled()
            self._reached = (percent, message)
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
                self._future = loop.run_in_executor(None, self._run_work, progress)
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
            if not self._cancel.is_set():
                self._cancelled_at = time.monotonic()
                self._cancel.set()
            if self._future is not None:
                # A run left early ends with Cancelled that nobody awaits: mark it retrieved.
                self._future.add_done_callback(lambda f: f.cancelled() or f.exception())

    def result(self) -> T:
        if self._future is None or not self._future.done():
            raise RuntimeError("StageRun.result() before the run finished")
        return self._future.result()
