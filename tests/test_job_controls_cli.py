"""`roar pause`, `roar resume`, `roar retry` and `roar watch` of a paused job: the real CLI in a
subprocess against the orchestrator of tests/test_orchestrator.py (fake stages on loopback)."""

from __future__ import annotations

import asyncio
import io
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

import pytest

from roar.cli import ProgressView
from roar.v1 import orchestrator_pb2 as pb
from tests.support.songs import write_song
from tests.support.suite import REPO
from tests.test_orchestrator import HANGS, SONG_SECONDS, Behaviour, Code, Rig, running_rig, separating


class Ran(NamedTuple):
    code: int
    out: str
    err: str


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with running_rig(tmp_path / "data", max_running_jobs=1) as running:
        yield running


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_song(tmp_path_factory.mktemp("song") / "song.wav", SONG_SECONDS)


async def roar(rig: Rig, *args: str) -> Ran:
    """Runs `roar ARGS --server RIG` without blocking the rig's event loop."""
    env = {k: v for k, v in os.environ.items() if k != "ROAR_API_KEY"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "roar.cli",
        *args,
        "--server",
        rig.address,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    ran = Ran(proc.returncode or 0, out.decode(), err.decode())
    assert "Traceback" not in ran.err, ran.err
    return ran


async def test_pause_watch_and_resume_from_the_command_line(rig: Rig, song: Path) -> None:
    rig.separation.script.behaviours = [HANGS]
    job = await rig.submit(song)
    await separating(rig, job.job_id, calls=1)
    job_id = job.job_id
    hint = f"roar resume {job_id} --server {rig.address}"

    paused = await roar(rig, "pause", job_id)
    assert paused.code == 0, paused.err
    assert paused.out == f"job {job_id} paused: `{hint}` goes on from here\n"
    # `roar watch` of a paused job shows its progress, says it is paused and how to go on, and ends.
    watched = await roar(rig, "watch", job_id)
    assert watched.code == 1
    assert f"paused: roar resume {job_id} goes on from here" in watched.err  # the progress line
    assert watched.out == f"job {job_id} is paused: `{hint}` goes on from where it stopped\n"
    listed = await roar(rig, "jobs")
    [row] = [line for line in listed.out.splitlines() if line.startswith(job_id)]
    assert " paused " in row
    refused = await roar(rig, "pause", job_id)  # pausing a paused job changes nothing
    assert refused.code == 0

    resumed = await roar(rig, "resume", job_id)
    assert resumed.code == 0, resumed.err
    assert resumed.out.splitlines()[0] == f"job {job_id} resumed"
    assert resumed.out.splitlines()[-1] == f"job {job_id} succeeded"
    assert "resumed: going on from where it was paused" in resumed.err
    assert len(rig.separation.script.calls) == 2


async def test_retry_follows_the_rerun(rig: Rig, song: Path, tmp_path: Path) -> None:
    rig.transcription.script.behaviours = [Behaviour(stop_after=0, code=Code.INVALID_ARGUMENT)]
    partial = (await rig.run_job(song))[-1]
    assert partial.state == pb.JOB_STATE_PARTIAL
    retried = await roar(rig, "retry", partial.job_id, "--out", str(tmp_path / "out"))
    assert retried.code == 0, retried.err
    lines = retried.out.splitlines()
    assert lines[0] == f"job {partial.job_id}: queued again: retrying transcription, karaoke"
    assert lines[-1] == f"job {partial.job_id} succeeded"
    assert (tmp_path / "out" / "lyrics.lrc").is_file() and (tmp_path / "out" / "vocals.wav").is_file()
    assert len(rig.separation.script.calls) == 1


async def test_refusals_say_why_and_exit_non_zero(rig: Rig, song: Path) -> None:
    done = (await rig.run_job(song))[-1]
    assert done.state == pb.JOB_STATE_SUCCEEDED
    for command, says in (
        ("pause", f"job {done.job_id} has ended (succeeded): only a queued or running job can be paused"),
        ("resume", f"job {done.job_id} is succeeded, not paused: only a paused job can be resumed"),
        (
            "retry",
            f"job {done.job_id} is succeeded: only a failed, partial or cancelled job can be retried "
            "(it succeeded)",
        ),
    ):
        ran = await roar(rig, command, done.job_id)
        assert (ran.code, ran.err, ran.out) == (1, f"roar: {says}\n", ""), command
    missing = await roar(rig, "pause", "0" * 32)
    assert missing.code == 1 and missing.err == f"roar: NOT_FOUND: no job {'0' * 32!r}\n"


def test_the_progress_view_prints_a_pause_and_the_resume_in_plain_logs() -> None:
    out = io.StringIO()
    view = ProgressView(out)
    for state, message in (
        (pb.JOB_STATE_RUNNING, "separating"),
        (pb.JOB_STATE_PAUSED, "paused: roar resume abc goes on from here"),
        (pb.JOB_STATE_QUEUED, "queued again: resuming"),
        (pb.JOB_STATE_RUNNING, "resumed: going on from where it was paused"),
    ):
        view.update(
            pb.ProgressEvent(stage=pb.STAGE_SEPARATION, stage_percent=42.0, message=message, state=state)
        )
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[-1].strip() for line in lines] == [
        "separating",
        "paused: roar resume abc goes on from here",
        "queued again: resuming",
        "resumed: going on from where it was paused",
    ]
