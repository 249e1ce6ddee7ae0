"""A job's progress events: each is stored (with its job row) the moment it is made, and wakes
every watcher, who can follow a job from any seq."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from google.protobuf.timestamp_pb2 import Timestamp

from orchestrator.store import TERMINAL_STATES, Store
from roar import metrics
from roar.errors import NotFound
from roar.v1 import orchestrator_pb2 as pb

# Progress updates closer together than this, with the same message, are merged.
MIN_EVENT_INTERVAL = 0.25


def now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


class Events:
    def __init__(self, store: Store) -> None:
        self._store = store
        # One signal per watched job, set (and dropped) by the next event.
        self._signals: dict[str, asyncio.Event] = {}

    def emit(
        self,
        job: pb.Job,
        stage: int,
        stage_percent: float,
        message: str,
        *,
        overall: float | None = None,
        eta: float | None = None,
        error: pb.Error | None = None,
        final: bool = False,
    ) -> pb.ProgressEvent:
        """Stores the job's next event (the job row follows it) and wakes its watchers."""
        event = pb.ProgressEvent(
            job_id=job.job_id,
            stage=stage,
            stage_percent=stage_percent,
            overall_percent=job.last_event.overall_percent if overall is None else overall,
            message=message,
            timestamp=now(),
            state=job.state,
        )
        if eta is not None:
            event.eta_seconds = eta
        if error is not None:
            event.error.CopyFrom(error)
        if final:
            event.artifacts.extend(job.artifacts)
            event.errors.extend(job.errors)
        self._store.record(event, job)
        signal = self._signals.pop(job.job_id, None)
        if signal is not None:
            signal.set()
        return event

    async def watch(self, job_id: str, after_seq: int) -> AsyncIterator[pb.ProgressEvent]:
        """Every event after `after_seq`, then live ones until the job's last event."""
        if self._store.get_job(job_id) is None:
            raise NotFound(f"no job {job_id!r}")
        live = False  # after the first wait, every event read was made while this watcher waited
        while True:
            # Take the signal before reading, so an event stored after the read still wakes us.
            signal = self._signals.setdefault(job_id, asyncio.Event())
            events = self._store.events_after(job_id, after_seq)
            for event in events:
                if live:
                    metrics.event_delivered(event.timestamp.ToNanoseconds() / 1e9)
                yield event
                after_seq = event.seq
                if event.state in TERMINAL_STATES:
                    return
            if not events:
                job = self._store.get_job(job_id)
                if job is None or job.state in TERMINAL_STATES:
                    return
                await signal.wait()
                live = True
