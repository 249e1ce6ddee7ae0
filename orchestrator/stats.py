"""GetStats: processing statistics drawn from the store (so they work on the embedded default):
jobs per UTC day by how they ended, each stage's runs, success rate and speed per minute of audio,
the slowest jobs and the failed ones with their errors.

The period is `days` whole UTC days ending with today's (which is still going on): it starts at the
UTC midnight `days - 1` days before today's."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from statistics import fmean

from orchestrator.store import TERMINAL_STATES, StageResult, Store
from roar import metrics
from roar.errors import BadInput
from roar.v1 import orchestrator_pb2 as pb

DEFAULT_DAYS = 30
MAX_DAYS = 366
MAX_SLOWEST = 10
MAX_FAILED_JOBS = 20
DAY_SECONDS = 86_400
# The counter of each way a job can end, in Stats and DayStats.
_ENDED_AS = {
    pb.JOB_STATE_SUCCEEDED: "succeeded",
    pb.JOB_STATE_PARTIAL: "partial",
    pb.JOB_STATE_FAILED: "failed",
    pb.JOB_STATE_CANCELLED: "cancelled",
}
_FAILED_STATES = (pb.JOB_STATE_FAILED, pb.JOB_STATE_PARTIAL)


def stats(store: Store, owner: str | None, days: int, now: float) -> pb.Stats:
    """The statistics of the `days` UTC days up to `now` (0: DEFAULT_DAYS) over `owner`'s jobs, or
    every caller's (None). INVALID_ARGUMENT for days outside 0..MAX_DAYS."""
    if not 0 <= days <= MAX_DAYS:
        raise BadInput(f"days must be 0 (the default, {DEFAULT_DAYS}) to {MAX_DAYS}")
    days = days or DEFAULT_DAYS
    # The epoch is a UTC midnight and Unix time has no leap seconds: every day is DAY_SECONDS long.
    since = int(now // DAY_SECONDS - days + 1) * DAY_SECONDS
    end = since + days * DAY_SECONDS
    result = pb.Stats(all_callers=owner is None)
    result.since.FromSeconds(since)
    day_stats = [pb.DayStats() for _ in range(days)]
    for index, day in enumerate(day_stats):
        day.day.FromSeconds(since + index * DAY_SECONDS)

    jobs = store.jobs_created_between(since, end, owner)
    for job in jobs:
        _count(result, job.state)
        _count(day_stats[_day_index(job.created.ToNanoseconds() / 1e9, since)], job.state)

    runs = store.stage_results_between(since, end, owner)
    result.stages.extend(_stage_stats(runs))
    runs_by_day: dict[int, list[StageResult]] = defaultdict(list)
    for run in runs:
        runs_by_day[_day_index(run.ended_at, since)].append(run)
    for index, day_runs in runs_by_day.items():
        day_stats[index].stages.extend(_stage_stats(day_runs))
    result.days.extend(day_stats)

    finished = [job for job in jobs if job.state in TERMINAL_STATES and job.audio.duration_seconds > 0]
    finished.sort(key=lambda job: _job_seconds(job) / job.audio.duration_seconds, reverse=True)
    result.slowest.extend(_job_stats(job) for job in finished[:MAX_SLOWEST])
    failed = [job for job in jobs if job.state in _FAILED_STATES]  # the store lists newest first
    result.failed_jobs.extend(_job_stats(job) for job in failed[:MAX_FAILED_JOBS])
    return result


def _day_index(when: float, since: int) -> int:
    return int((when - since) // DAY_SECONDS)


def _count(target: pb.Stats | pb.DayStats, state: int) -> None:
    target.jobs += 1
    if state in _ENDED_AS:
        field = _ENDED_AS[state]
        setattr(target, field, getattr(target, field) + 1)


def _stage_stats(runs: Iterable[StageResult]) -> list[pb.StageStats]:
    """One StageStats per stage that ran, in Stage order."""
    by_stage: dict[int, list[StageResult]] = defaultdict(list)
    for run in runs:
        by_stage[run.stage].append(run)
    stages = []
    for stage in sorted(by_stage):
        ok = [run for run in by_stage[stage] if run.code == metrics.OK]
        stats = pb.StageStats(stage=stage, runs=len(by_stage[stage]), succeeded=len(ok))
        if ok:
            stats.mean_seconds = fmean(run.seconds for run in ok)
        per_minute = [run.seconds / (run.audio_seconds / 60) for run in ok if run.audio_seconds > 0]
        if per_minute:
            stats.seconds_per_audio_minute = fmean(per_minute)
        stages.append(stats)
    return stages


def _job_seconds(job: pb.Job) -> float:
    """From the job's creation to its last event."""
    return (job.updated.ToNanoseconds() - job.created.ToNanoseconds()) / 1e9


def _job_stats(job: pb.Job) -> pb.JobStats:
    return pb.JobStats(
        job_id=job.job_id,
        filename=job.filename,
        state=job.state,
        created=job.created,
        seconds=_job_seconds(job),
        audio_seconds=job.audio.duration_seconds,
        errors=job.errors,
    )
