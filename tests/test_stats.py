"""GetStats and `roar stats`: the figures from a real store holding jobs and stage runs made
through its own methods (days, owners, means, success rates, the slowest and failed jobs); the
stage runs the pipeline records (fake stages at the gRPC boundary, tests/test_orchestrator.py's
rig) and GetStats through real gRPC with API keys; `roar stats` against the real suite."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from orchestrator.auth import create_key
from orchestrator.stats import DAY_SECONDS, DEFAULT_DAYS, MAX_DAYS, stats
from orchestrator.store import Store
from roar.auth import bearer_metadata
from roar.errors import BadInput
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support.songs import write_song
from tests.support.suite import REPO, Suite
from tests.test_orchestrator import SONG_SECONDS, Behaviour, Code, Rig

SEP, TRA, KAR = pb.STAGE_SEPARATION, pb.STAGE_TRANSCRIPTION, pb.STAGE_KARAOKE
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC).timestamp()


def at(day: int, hour: int, minute: int = 0, second: float = 0.0) -> float:
    """A time on a day of November 2026, UTC."""
    return datetime(2026, 11, day, hour, minute, tzinfo=UTC).timestamp() + second


def add_job(
    store: Store,
    job_id: str,
    owner: str,
    state: int,
    created: float,
    seconds: float,
    audio_seconds: float,
    errors: tuple[tuple[int, str], ...] = (),
) -> None:
    job = pb.Job(job_id=job_id, state=state, filename=f"{job_id}.wav")
    job.audio.duration_seconds = audio_seconds
    job.created.FromNanoseconds(round(created * 1e9))
    job.updated.FromNanoseconds(round((created + seconds) * 1e9))
    for stage, code in errors:
        job.errors.add(stage=stage, code=code, message=f"{code.lower()} in the test")
    store.put_job(f"upload-{job_id}", job, owner)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """Three days to count (Nov 28-30, the 29th empty) and one job just before them."""
    opened = Store(tmp_path / "roar.sqlite")
    add_job(opened, "a", "alice", pb.JOB_STATE_SUCCEEDED, at(28, 10), 120, 60)
    add_job(opened, "b", "alice", pb.JOB_STATE_FAILED, at(30, 9), 15, 30, ((SEP, "UNAVAILABLE"),))
    add_job(opened, "c", "bob", pb.JOB_STATE_PARTIAL, at(30, 10), 600, 120, ((TRA, "INVALID_ARGUMENT"),))
    add_job(opened, "d", "bob", pb.JOB_STATE_RUNNING, at(30, 11), 60, 10)
    add_job(opened, "early", "alice", pb.JOB_STATE_SUCCEEDED, at(27, 23, 59, 59.0), 10, 10)
    add_job(opened, "f", "", pb.JOB_STATE_CANCELLED, at(28, 0), 4, 20)  # the first instant counted
    runs = [
        ("a", SEP, "OK", 30, 60, at(28, 10, 1)),
        ("a", TRA, "OK", 60, 60, at(28, 10, 2)),
        ("a", KAR, "OK", 1, 60, at(28, 10, 2, 1.0)),
        ("b", SEP, "UNAVAILABLE", 5, 30, at(30, 9, 0, 5.0)),
        ("c", SEP, "OK", 90, 120, at(30, 10, 2)),
        ("c", TRA, "INVALID_ARGUMENT", 10, 120, at(30, 10, 3)),
        ("early", SEP, "OK", 5, 10, at(27, 23, 59, 59.5)),  # ended before the period
    ]
    for run in runs:
        opened.add_stage_result(*run)
    yield opened
    opened.close()


def stage_figures(stages: list[pb.StageStats]) -> list[tuple[int, int, int, float, float]]:
    return [(s.stage, s.runs, s.succeeded, s.mean_seconds, s.seconds_per_audio_minute) for s in stages]


def test_every_callers_figures_over_three_days(store: Store) -> None:
    result = stats(store, None, 3, NOW)
    assert result.all_callers
    assert result.since.ToSeconds() == at(28, 0)
    assert (result.jobs, result.succeeded, result.partial, result.failed, result.cancelled) == (5, 1, 1, 1, 1)
    # Means over the successful runs only: separation took 30 s of 60 s of audio and 90 s of 120 s,
    # so 60 s and (30 + 45) / 2 seconds per minute of audio.
    assert stage_figures(result.stages) == [
        (SEP, 3, 2, 60.0, 37.5),
        (TRA, 2, 1, 60.0, 60.0),
        (KAR, 1, 1, 1.0, 1.0),
    ]

    assert [d.day.ToSeconds() for d in result.days] == [at(28, 0), at(29, 0), at(30, 0)]
    first, empty, last = result.days
    assert (first.jobs, first.succeeded, first.cancelled, first.failed, first.partial) == (2, 1, 1, 0, 0)
    assert stage_figures(first.stages) == [
        (SEP, 1, 1, 30.0, 30.0),
        (TRA, 1, 1, 60.0, 60.0),
        (KAR, 1, 1, 1.0, 1.0),
    ]
    assert empty == pb.DayStats(day=empty.day)
    # The running job counts in jobs only.
    assert (last.jobs, last.succeeded, last.partial, last.failed, last.cancelled) == (3, 0, 1, 1, 0)
    assert stage_figures(last.stages) == [(SEP, 2, 1, 90.0, 45.0), (TRA, 1, 0, 0.0, 0.0)]

    # Seconds per second of audio: c 5, a 2, b 0.5, f 0.2; the running job is not finished.
    assert [(j.job_id, j.seconds, j.audio_seconds) for j in result.slowest] == [
        ("c", 600, 120),
        ("a", 120, 60),
        ("b", 15, 30),
        ("f", 4, 20),
    ]
    assert [j.job_id for j in result.failed_jobs] == ["c", "b"]  # newest first
    c = result.failed_jobs[0]
    assert (c.filename, c.state, c.created.ToSeconds()) == ("c.wav", pb.JOB_STATE_PARTIAL, at(30, 10))
    assert [(e.stage, e.code, e.message) for e in c.errors] == [
        (TRA, "INVALID_ARGUMENT", "invalid_argument in the test")
    ]


def test_a_callers_figures_hold_only_their_own_jobs(store: Store) -> None:
    alice = stats(store, "alice", 3, NOW)
    assert not alice.all_callers
    assert (alice.jobs, alice.succeeded, alice.failed, alice.partial, alice.cancelled) == (2, 1, 1, 0, 0)
    assert stage_figures(alice.stages) == [
        (SEP, 2, 1, 30.0, 30.0),
        (TRA, 1, 1, 60.0, 60.0),
        (KAR, 1, 1, 1.0, 1.0),
    ]
    assert [j.job_id for j in alice.slowest] == ["a", "b"]
    assert [j.job_id for j in alice.failed_jobs] == ["b"]
    assert [d.jobs for d in alice.days] == [1, 0, 1]

    bob = stats(store, "bob", 3, NOW)
    assert (bob.jobs, bob.partial) == (2, 1)
    assert stage_figures(bob.stages) == [(SEP, 1, 1, 90.0, 45.0), (TRA, 1, 0, 0.0, 0.0)]
    anonymous = stats(store, "", 3, NOW)
    assert (anonymous.jobs, anonymous.cancelled, list(anonymous.stages)) == (1, 1, [])
    assert stats(store, "nobody", 3, NOW).jobs == 0


def test_days_default_to_thirty_and_are_bounded(store: Store) -> None:
    default = stats(store, None, 0, NOW)
    assert len(default.days) == DEFAULT_DAYS
    assert default.since.ToSeconds() == at(30, 0) - (DEFAULT_DAYS - 1) * DAY_SECONDS
    assert default.days[-1].day.ToSeconds() == at(30, 0)
    assert default.jobs == 6  # the job of the 27th too
    assert len(stats(store, None, MAX_DAYS, NOW).days) == MAX_DAYS
    today = stats(store, None, 1, NOW)
    assert (today.since.ToSeconds(), today.jobs, [d.jobs for d in today.days]) == (at(30, 0), 3, [3])
    for days in (-1, MAX_DAYS + 1):
        with pytest.raises(BadInput, match=f"0 .* to {MAX_DAYS}"):
            stats(store, None, days, NOW)


def test_at_most_ten_slowest_and_twenty_failed_jobs(tmp_path: Path) -> None:
    store = Store(tmp_path / "roar.sqlite")
    for i in range(25):
        # Job i took i + 1 seconds per second of audio; newer jobs have higher numbers.
        add_job(
            store, f"j{i:02}", "", pb.JOB_STATE_FAILED, at(30, 1, i), 10 * (i + 1), 10, ((SEP, "INTERNAL"),)
        )
    result = stats(store, None, 1, NOW)
    store.close()
    assert [j.job_id for j in result.slowest] == [f"j{i:02}" for i in range(24, 14, -1)]
    assert [j.job_id for j in result.failed_jobs] == [f"j{i:02}" for i in range(24, 4, -1)]


# The pipeline's records, and GetStats over real gRPC (tests/test_orchestrator.py's rig: the
# orchestrator in this process, fake stages on loopback).


async def test_the_pipeline_records_how_each_stage_run_ended(tmp_path: Path) -> None:
    song = write_song(tmp_path / "song.wav", SONG_SECONDS)
    rig = Rig(tmp_path / "data")
    rig.karaoke.script.behaviours = [Behaviour(stop_after=0, code=Code.INVALID_ARGUMENT)]
    await rig.start()
    try:
        final = (await rig.run_job(song))[-1]
        keyless = await rig.stub.GetStats(pb.GetStatsRequest(days=2))
        # The anonymous caller counts every job while the server has no keys; then only its own.
        _, alice = create_key(rig.store, "alice", admin=False)
        _, admin = create_key(rig.store, "admin", admin=True)
        anonymous = await rig.stub.GetStats(pb.GetStatsRequest())
        as_alice = await rig.stub.GetStats(pb.GetStatsRequest(), metadata=bearer_metadata(alice))
        as_admin = await rig.stub.GetStats(pb.GetStatsRequest(), metadata=bearer_metadata(admin))
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await rig.stub.GetStats(pb.GetStatsRequest(days=MAX_DAYS + 1))
    finally:
        await rig.stop()
    assert final.state == pb.JOB_STATE_PARTIAL
    assert keyless.all_callers and len(keyless.days) == 2
    assert (keyless.jobs, keyless.partial, keyless.days[-1].jobs) == (1, 1, 1)
    assert [(s.stage, s.runs, s.succeeded) for s in keyless.stages] == [(SEP, 1, 1), (TRA, 1, 1), (KAR, 1, 0)]
    for stage in keyless.stages[:2]:
        assert stage.mean_seconds > 0
        assert stage.seconds_per_audio_minute == pytest.approx(stage.mean_seconds * 60 / SONG_SECONDS)
    assert keyless.stages[2].mean_seconds == 0  # no successful run to time
    assert list(keyless.days[-1].stages) == list(keyless.stages)
    [job] = keyless.failed_jobs
    assert (job.job_id, job.state, job.audio_seconds) == (final.job_id, pb.JOB_STATE_PARTIAL, SONG_SECONDS)
    assert [(e.stage, e.code) for e in job.errors] == [(KAR, "INVALID_ARGUMENT")]
    # From created to the last event.
    assert job.seconds == (final.timestamp.ToNanoseconds() - job.created.ToNanoseconds()) / 1e9
    assert [j.job_id for j in keyless.slowest] == [final.job_id]

    assert (anonymous.all_callers, anonymous.jobs, len(anonymous.days)) == (False, 1, DEFAULT_DAYS)
    assert (as_alice.all_callers, as_alice.jobs, list(as_alice.stages), list(as_alice.failed_jobs)) == (
        False,
        0,
        [],
        [],
    )
    assert (as_admin.all_callers, as_admin.jobs, as_admin.stages) == (True, 1, keyless.stages)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(MAX_DAYS) in refused.value.details()


async def test_a_cancelled_stage_run_is_not_counted(tmp_path: Path) -> None:
    song = write_song(tmp_path / "song.wav", SONG_SECONDS)
    rig = Rig(tmp_path / "data")
    held = Behaviour(hold_at=2)
    rig.separation.script.behaviours = [held]
    await rig.start()
    try:
        job = await rig.submit(song)
        await rig.wait_for(lambda: rig.separation.script.sent == [2])
        await rig.stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id))
        final = (await rig.follow(job.job_id))[-1]
        result = await rig.stub.GetStats(pb.GetStatsRequest())
    finally:
        held.hold.set()
        await rig.stop()
    assert final.state == pb.JOB_STATE_CANCELLED
    assert (result.jobs, result.cancelled, list(result.stages), list(result.failed_jobs)) == (1, 1, [], [])


# `roar stats` against the real suite (tiny models): what one successful job and one failed job add.


def roar(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roar.cli", *args], cwd=REPO, capture_output=True, text=True, timeout=300
    )


def stage_row(output: str, name: str) -> tuple[int, int]:
    """RUNS and OK of a stage in `roar stats`'s stage table."""
    match = re.search(rf"^{name} +(\d+) +(\d+) ", output, re.MULTILINE)
    assert match, output
    return int(match[1]), int(match[2])


def test_roar_stats_shows_the_jobs_run(suite: Suite, tmp_path: Path) -> None:
    with grpc.insecure_channel(suite.address) as channel:
        before = pb_grpc.OrchestratorStub(channel).GetStats(pb.GetStatsRequest(days=7), timeout=30)
    ran = roar(
        "process",
        str(write_song(tmp_path / "ok.wav", 4.0)),
        "--out",
        str(tmp_path / "o"),
        "--server",
        suite.address,
    )
    assert ran.returncode == 0, ran.stderr
    # A listed model whose files are missing (conftest): separation fails, nothing else runs.
    broken = write_song(tmp_path / "broken.wav", 3.0)
    failed = roar("process", str(broken), "--separation-model", "broken", "--server", suite.address)
    assert failed.returncode == 1 and "failed" in failed.stdout
    failed_id = failed.stdout.split()[-2]

    shown = roar("stats", "--days", "7", "--server", suite.address)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert out.startswith(f"7 days from {before.since.ToDatetime():%Y-%m-%d} (UTC), every caller's jobs")
    assert (
        f"jobs {before.jobs + 2}  succeeded {before.succeeded + 1}  partial {before.partial}  "
        f"failed {before.failed + 1}  cancelled {before.cancelled}"
    ) in out
    runs = {s.stage: (s.runs, s.succeeded) for s in before.stages}
    sep_runs, sep_ok = runs.get(SEP, (0, 0))
    assert stage_row(out, "separation") == (sep_runs + 2, sep_ok + 1)
    # The failed job's transcription was still waiting for vocals: it never ran.
    for stage, name in ((TRA, "transcription"), (KAR, "karaoke")):
        stage_runs, stage_ok = runs.get(stage, (0, 0))
        assert stage_row(out, name) == (stage_runs + 1, stage_ok + 1)

    day_rows = re.findall(
        r"^(\d{4}-\d\d-\d\d) +(\d+) +(\d+) +(\d+) +(\d+) +(\d+) .*?(#*)$", out, re.MULTILINE
    )
    assert len(day_rows) == 7
    today, jobs_today, ok_today, *_, bar = day_rows[-1]
    assert today == f"{before.days[-1].day.ToDatetime():%Y-%m-%d}"
    assert (int(jobs_today), int(ok_today)) == (before.days[-1].jobs + 2, before.days[-1].succeeded + 1)
    assert bar.startswith("#")
    failed_section = out.split("failed jobs, newest first\n", 1)[1]
    assert failed_section.splitlines()[1].startswith(f"{failed_id}  failed")
    assert "separation: FAILED_PRECONDITION: " in failed_section
