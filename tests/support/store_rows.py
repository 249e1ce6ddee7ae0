"""Jobs and events made by hand, for tests that drive the store (orchestrator/store.py) directly."""

from __future__ import annotations

from roar.v1 import orchestrator_pb2 as pb


def new_job(job_id: str, state: int = pb.JOB_STATE_RUNNING, created: float | None = None) -> pb.Job:
    """A job of "song.wav", created now or at `created` (seconds since 1970), updated now."""
    job = pb.Job(job_id=job_id, state=state, filename="song.wav")
    if created is None:
        job.created.GetCurrentTime()
    else:
        job.created.FromNanoseconds(int(created * 1e9))
    job.updated.GetCurrentTime()
    return job


def new_event(job: pb.Job, message: str) -> pb.ProgressEvent:
    """A separation event of the job, in its state, timed now."""
    event = pb.ProgressEvent(job_id=job.job_id, stage=pb.STAGE_SEPARATION, message=message, state=job.state)
    event.timestamp.GetCurrentTime()
    return event
