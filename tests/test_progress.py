"""StageRun: progress from a worker thread, cancel by leaving the loop, bounded concurrency."""

from __future__ import annotations

import asyncio
import threading

import pytest

from roar.errors import Cancelled
from roar.progress import StageRun, scaled


async def test_progress_streams_then_result() -> None:
    def work(progress) -> str:
        for percent in (10.0, 50.0, 100.0):
            progress(percent, f"at {percent}")
        return "done"

    run = StageRun(work)
    updates = [u async for u in run]
    assert [u.percent for u in updates] == [10.0, 50.0, 100.0]
    assert updates[1].message == "at 50.0" and updates[-1].eta_seconds == 0.0
    assert run.result() == "done"


async def test_errors_of_the_work_reach_result() -> None:
    def work(progress) -> None:
        progress(1.0)
        raise ValueError("broken input")

    run = StageRun(work)
    _ = [u async for u in run]
    with pytest.raises(ValueError, match="broken input"):
        run.result()


async def test_leaving_the_loop_stops_the_work() -> None:
    steps = []
    stopped = threading.Event()

    def work(progress) -> None:
        try:
            for i in range(1000):
                steps.append(i)
                progress(i / 10)
                threading.Event().wait(0.005)
        except Cancelled:
            stopped.set()
            raise

    run = StageRun(work)
    async for update in run:
        if update.percent >= 1.0:
            break
    await asyncio.to_thread(stopped.wait, 5)
    assert stopped.is_set() and len(steps) < 1000


async def test_slots_queue_the_second_run_until_the_first_ends() -> None:
    slots = asyncio.Semaphore(1)
    release = threading.Event()
    order = []

    def first(progress) -> None:
        progress(1.0)
        release.wait(5)
        order.append("first")

    def second(progress) -> None:
        order.append("second")

    run1, run2 = StageRun(first, slots), StageRun(second, slots)
    iterator = run1.__aiter__()
    await iterator.__anext__()  # the first run holds the slot now
    second_updates = []

    async def consume_second() -> None:
        async for update in run2:
            second_updates.append(update)

    task = asyncio.create_task(consume_second())
    await asyncio.sleep(0.2)
    assert second_updates and "queued" in second_updates[0].message and order == []
    release.set()
    _ = [u async for u in iterator]
    await task
    assert order == ["first", "second"]


def test_scaled_maps_a_sub_task_into_its_parent_range() -> None:
    seen = []
    report = scaled(lambda p, m="": seen.append(p), 20.0, 60.0)
    for p in (-5.0, 0.0, 50.0, 100.0, 150.0):
        report(p)
    assert seen == [20.0, 20.0, 40.0, 60.0, 60.0]
