"""A job's progress events: each is stored (with its job row) the moment it is made, and wakes
every watcher, who can follow a job from any seq. On a shared (PostgreSQL) store the events of a
job another orchestrator runs wake this one's watchers through wake(), called for each NOTIFY
(orchestrator/jobs.py listens)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from google.protobuf.timestamp_pb2 import Timestamp

from orchestrator.store import TERMINAL_STATES, Store
from roar import metrics
from roar.errors import NotFound
from roar.v1 import orchestrator_pb2 as pb

# Progress updates closer together than this, with the same message, are merged.
MIN_EVENT_INTERVAL = 0.25
# On a shared store watchers also look every this many seconds, in case an announcement was lost
# (the LISTEN connection broke and is reconnecting).
SHARED_WATCH_POLL_SECONDS = 5.0


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
        error: pb.JobError | None = None,
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
        self.wake(job.job_id)
        return event

    def wake(self, job_id: str) -> None:
        """Wakes the job's watchers to read its new events."""
        signal = self._signals.pop(job_id, None)
        if signal is not None:
            signal.set()

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
                # The job's last event so far: a retried job's earlier final event is not its end.
                if event.state in TERMINAL_STATES and event is events[-1]:
                    return
            if not events:
                job = self._store.get_job(job_id)
                if job is None:
                    return
                if job.last_event.seq > after_seq:
                    # Stored (by another orchestrator on a shared store) between the two reads: read
                    # it before judging the job's state, or its final event would be skipped.
                    continue
                if job.state in TERMINAL_STATES:
                    return
                if self._store.shared:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(signal.wait(), SHARED_WATCH_POLL_SECONDS)
                else:
                    await signal.wait()
                live = True
