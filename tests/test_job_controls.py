"""PauseJob, ResumeJob and RetryJob through the orchestrator of tests/test_orchestrator.py (its Rig:
fake stages on loopback, the real pipeline, store and servicer): a paused job stops at its
checkpoint and frees its worker and stage, stays paused across a restart, and goes on from there;
a retried job reruns only the stages that did not succeed; every refusal has its status."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from orchestrator.auth import create_key
from orchestrator.jobs import RESUMED_NOTE, RETRIED_NOTE, paused_message
from roar import metrics
from roar.auth import bearer_metadata
from roar.v1 import orchestrator_pb2 as pb
from tests.support.songs import write_song
from tests.test_orchestrator import (
    HANGS,
    SONG_SECONDS,
    STEMS,
    WINDOW_COUNT,
    Behaviour,
    Code,
    Rig,
    running_rig,
    separating,
    unbroken_stems,
)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with running_rig(tmp_path / "data", max_running_jobs=1) as running:
        yield running


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_song(tmp_path_factory.mktemp("song") / "song.wav", SONG_SECONDS)


def state(rig: Rig, job_id: str) -> int:
    return rig.store.get_job(job_id).state


async def pause(rig: Rig, job_id: str) -> pb.Job:
    return await rig.stub.PauseJob(pb.PauseJobRequest(job_id=job_id))


async def follow_from(rig: Rig, job_id: str, after_seq: int) -> list[pb.ProgressEvent]:
    events = rig.stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=after_seq))
    return await asyncio.wait_for(_collect(events), 60)


async def _collect(events) -> list[pb.ProgressEvent]:
    return [e async for e in events]


def assert_gapless(events: list[pb.ProgressEvent]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def refused(call, request) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(request)
    return info.value


# --- pause and resume --------------------------------------------------------------------------


async def test_a_job_paused_mid_separation_resumes_from_its_checkpoint_with_the_same_stems(
    tmp_path: Path, song: Path
) -> None:
    expected = await unbroken_stems(tmp_path, song)
    rig = Rig(tmp_path / "data")
    held = Behaviour(hold_at=3 * len(STEMS))  # holds after 3 windows until the test lets it go
    rig.separation.script.behaviours = [held]
    await rig.start()
    try:
        job = await rig.submit(song)
        await rig.wait_for(
            lambda: (
                (checkpoint := rig.store.checkpoint(job.job_id, pb.STAGE_SEPARATION)) is not None
                and checkpoint.windows_done == 3
            )
        )
        paused = await pause(rig, job.job_id)
        assert paused.state == pb.JOB_STATE_PAUSED
        assert paused.last_event.message == paused_message(job.job_id)
        assert paused.last_event.state == pb.JOB_STATE_PAUSED
        assert metrics.JOBS_PAUSED._value.get() == 1
        # The stage call was cancelled: letting the fake go on sends nothing more.
        held.hold.set()
        await asyncio.sleep(0.3)
        assert rig.separation.script.sent == [3 * len(STEMS)]
        assert rig.store.checkpoint(job.job_id, pb.STAGE_SEPARATION).windows_done == 3
        # Pausing a paused job changes nothing.
        assert (await pause(rig, job.job_id)).last_event.seq == paused.last_event.seq

        resumed = await rig.stub.ResumeJob(pb.ResumeJobRequest(job_id=job.job_id))
        assert resumed.state == pb.JOB_STATE_QUEUED
        events = await rig.follow(job.job_id)
        stems = {name: await rig.file(job.job_id, name) for name in expected}
    finally:
        await rig.stop()
    final = events[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    assert stems == expected  # bit-exact, as if never paused
    assert [o.first_window for o, _ in rig.separation.script.calls] == [0, 3]
    assert_gapless(events)
    messages = [e.message for e in events]
    at = messages.index(paused_message(job.job_id))
    assert messages[at + 1 : at + 3] == ["queued again: resuming", RESUMED_NOTE]
    assert f"separation resuming from window 3 of {WINDOW_COUNT}" in messages[at:]
    assert metrics.JOBS_PAUSED._value.get() == 0


async def test_pausing_frees_the_worker_for_the_next_job_in_line(rig: Rig, song: Path) -> None:
    rig.separation.script.behaviours = [HANGS]
    first = await rig.submit(song)
    await separating(rig, first.job_id, calls=1)
    second = await rig.submit(song)
    await rig.wait_for(lambda: rig.store.get_job(second.job_id).last_event.message == "queued: 1st in line")

    assert (await pause(rig, first.job_id)).state == pb.JOB_STATE_PAUSED
    assert (await rig.follow(second.job_id))[-1].state == pb.JOB_STATE_SUCCEEDED
    assert state(rig, first.job_id) == pb.JOB_STATE_PAUSED  # the free worker did not take it back

    await rig.stub.ResumeJob(pb.ResumeJobRequest(job_id=first.job_id))
    events = await rig.follow(first.job_id)
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED, events[-1]
    assert len(rig.separation.script.calls) == 3
    # WatchJob followed the job through its pause: PAUSED is not an end.
    assert pb.JOB_STATE_PAUSED in {e.state for e in events}
    assert_gapless(events)


async def test_a_paused_job_stays_paused_across_a_restart(rig: Rig, song: Path) -> None:
    rig.separation.script.behaviours = [HANGS]
    job = await rig.submit(song)
    await separating(rig, job.job_id, calls=1)
    await pause(rig, job.job_id)
    await rig.restart()
    await asyncio.sleep(0.5)  # time enough for a resumed job to call the separation again
    assert state(rig, job.job_id) == pb.JOB_STATE_PAUSED
    assert len(rig.separation.script.calls) == 1
    assert metrics.JOBS_PAUSED._value.get() == 1
    # GetStats counts it among the jobs, not among those that ended.
    stats = await rig.stub.GetStats(pb.GetStatsRequest())
    assert (stats.jobs, stats.succeeded, stats.failed, stats.cancelled, stats.partial) == (1, 0, 0, 0, 0)
    assert not stats.slowest and not stats.failed_jobs

    await rig.stub.ResumeJob(pb.ResumeJobRequest(job_id=job.job_id))
    events = await rig.follow(job.job_id)
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED, events[-1]
    assert "resuming after a restart" not in [e.message for e in events]


async def test_pausing_a_queued_job_takes_it_out_of_the_line(rig: Rig, song: Path) -> None:
    rig.separation.script.behaviours = [HANGS]
    first = await rig.submit(song)
    await separating(rig, first.job_id, calls=1)
    second = await rig.submit(song)
    third = await rig.submit(song)
    await rig.wait_for(lambda: rig.store.get_job(third.job_id).last_event.message == "queued: 2nd in line")

    paused = await pause(rig, second.job_id)
    assert paused.state == pb.JOB_STATE_PAUSED and paused.last_event.stage == pb.STAGE_UPLOAD
    # The job behind it moved up.
    await rig.wait_for(lambda: rig.store.get_job(third.job_id).last_event.message == "queued: 1st in line")
    await rig.stub.CancelJob(pb.CancelJobRequest(job_id=first.job_id))
    assert (await rig.follow(third.job_id))[-1].state == pb.JOB_STATE_SUCCEEDED
    assert state(rig, second.job_id) == pb.JOB_STATE_PAUSED
    assert len(rig.separation.script.calls) == 2  # the paused job never ran

    # A paused job can be cancelled: nothing runs it, so it ends at once.
    await rig.stub.CancelJob(pb.CancelJobRequest(job_id=second.job_id))
    assert (await rig.follow(second.job_id))[-1].state == pb.JOB_STATE_CANCELLED


# --- retry ---------------------------------------------------------------------------------------


async def test_retrying_a_failed_job_reruns_the_failed_separation(rig: Rig, song: Path) -> None:
    rig.separation.script.behaviours = [Behaviour(stop_after=3, code=Code.INVALID_ARGUMENT)]
    failed = (await rig.run_job(song))[-1]
    assert failed.state == pb.JOB_STATE_FAILED, failed

    retried = await rig.stub.RetryJob(pb.RetryJobRequest(job_id=failed.job_id))
    assert retried.state == pb.JOB_STATE_QUEUED and not retried.errors
    assert retried.last_event.message == "queued again: retrying separation, transcription, karaoke"
    rerun = await follow_from(rig, failed.job_id, retried.last_event.seq)
    final = rerun[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    assert rerun[0].message == RETRIED_NOTE
    assert {"vocals.wav", "instrumental.wav", "lyrics.lrc"} <= {a.name for a in final.artifacts}
    assert not final.errors
    assert len(rig.separation.script.calls) == 2
    # From the start, WatchJob shows the failure, the retry and the rerun, with no gap.
    events = await rig.follow(failed.job_id)
    assert_gapless(events)
    assert [e.state for e in events if e.stage == pb.STAGE_COMPLETE and e.state != pb.JOB_STATE_RUNNING] == [
        pb.JOB_STATE_FAILED,
        pb.JOB_STATE_SUCCEEDED,
    ]


async def test_retrying_a_partial_job_reruns_only_transcription_and_karaoke(rig: Rig, song: Path) -> None:
    rig.transcription.script.behaviours = [Behaviour(stop_after=0, code=Code.INVALID_ARGUMENT)]
    partial = (await rig.run_job(song))[-1]
    assert partial.state == pb.JOB_STATE_PARTIAL, partial
    stems = {name: await rig.file(partial.job_id, name) for name in ("vocals.wav", "instrumental.wav")}
    assert (len(rig.separation.script.calls), len(rig.karaoke.script.calls)) == (1, 0)

    retried = await rig.stub.RetryJob(pb.RetryJobRequest(job_id=partial.job_id))
    assert retried.last_event.message == "queued again: retrying transcription, karaoke"
    final = (await follow_from(rig, partial.job_id, retried.last_event.seq))[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final
    # Separation never ran again; its stems are the same files.
    assert len(rig.separation.script.calls) == 1
    assert len(rig.transcription.script.calls) == 2 and len(rig.karaoke.script.calls) == 1
    # The rerun streams the encoded vocals (the raw checkpoint went with the job's first end).
    rerun = rig.transcription.calls[-1]
    assert not rerun.options.HasField("pcm") and rerun.audio == stems["vocals.wav"]
    assert {name: await rig.file(partial.job_id, name) for name in stems} == stems
    assert {"lyrics.lrc", "words.json"} <= {a.name for a in final.artifacts}


async def test_retrying_a_cancelled_job_runs_it_to_the_end(rig: Rig, song: Path) -> None:
    rig.separation.script.behaviours = [HANGS]
    job = await rig.submit(song)
    await separating(rig, job.job_id, calls=1)
    await rig.stub.CancelJob(pb.CancelJobRequest(job_id=job.job_id))
    assert (await rig.follow(job.job_id))[-1].state == pb.JOB_STATE_CANCELLED
    retried = await rig.stub.RetryJob(pb.RetryJobRequest(job_id=job.job_id))
    final = (await follow_from(rig, job.job_id, retried.last_event.seq))[-1]
    assert final.state == pb.JOB_STATE_SUCCEEDED, final


async def test_a_retry_needs_the_song(rig: Rig, song: Path) -> None:
    rig.separation.script.behaviours = [Behaviour(stop_after=-1, code=Code.INVALID_ARGUMENT)]
    failed = (await rig.run_job(song))[-1]
    assert failed.state == pb.JOB_STATE_FAILED
    upload_id = rig.store.upload_of(failed.job_id)
    rig.store.delete_upload(upload_id)  # as the janitor does after ROAR_UPLOAD_TTL_HOURS
    error = await refused(rig.stub.RetryJob, pb.RetryJobRequest(job_id=failed.job_id))
    assert error.code() == Code.FAILED_PRECONDITION
    assert "ROAR_UPLOAD_TTL_HOURS" in error.details() and "submit the song again" in error.details()
    rig.store.mark_files_deleted(rig.store.get_job(failed.job_id), 0.0)  # ROAR_RETENTION_DAYS
    error = await refused(rig.stub.RetryJob, pb.RetryJobRequest(job_id=failed.job_id))
    assert error.code() == Code.FAILED_PRECONDITION and "ROAR_RETENTION_DAYS" in error.details()
    assert state(rig, failed.job_id) == pb.JOB_STATE_FAILED


# --- refusals ------------------------------------------------------------------------------------


async def test_controls_refuse_jobs_in_the_wrong_state(rig: Rig, song: Path) -> None:
    done = (await rig.run_job(song))[-1]
    assert done.state == pb.JOB_STATE_SUCCEEDED
    error = await refused(rig.stub.PauseJob, pb.PauseJobRequest(job_id=done.job_id))
    assert error.code() == Code.FAILED_PRECONDITION
    assert error.details() == (
        f"job {done.job_id} has ended (succeeded): only a queued or running job can be paused"
    )
    error = await refused(rig.stub.RetryJob, pb.RetryJobRequest(job_id=done.job_id))
    assert error.code() == Code.FAILED_PRECONDITION and "it succeeded" in error.details()

    rig.separation.script.behaviours = [HANGS]
    running = await rig.submit(song)
    await separating(rig, running.job_id, calls=2)
    error = await refused(rig.stub.ResumeJob, pb.ResumeJobRequest(job_id=running.job_id))
    assert error.code() == Code.FAILED_PRECONDITION
    assert error.details() == (
        f"job {running.job_id} is running, not paused: only a paused job can be resumed"
    )
    error = await refused(rig.stub.RetryJob, pb.RetryJobRequest(job_id=running.job_id))
    assert error.code() == Code.FAILED_PRECONDITION and "it has not ended" in error.details()
    await pause(rig, running.job_id)
    error = await refused(rig.stub.RetryJob, pb.RetryJobRequest(job_id=running.job_id))
    assert error.code() == Code.FAILED_PRECONDITION and "is paused" in error.details()

    # A stranger's job does not exist for them.
    _, key = create_key(rig.store, "stranger", admin=False)
    metadata = bearer_metadata(key)
    for call, request in (
        (rig.stub.PauseJob, pb.PauseJobRequest(job_id=running.job_id)),
        (rig.stub.ResumeJob, pb.ResumeJobRequest(job_id=running.job_id)),
        (rig.stub.RetryJob, pb.RetryJobRequest(job_id=done.job_id)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(request, metadata=metadata)
        assert info.value.code() == Code.NOT_FOUND
    assert state(rig, running.job_id) == pb.JOB_STATE_PAUSED


async def test_resume_and_retry_respect_the_job_limits(tmp_path: Path, song: Path) -> None:
    rig = Rig(tmp_path / "data", max_running_jobs=1, max_queued_jobs=0)
    rig.separation.script.behaviours = [HANGS, Behaviour(stop_after=-1, code=Code.INVALID_ARGUMENT), HANGS]
    await rig.start()
    try:
        paused = await rig.submit(song)
        await separating(rig, paused.job_id, calls=1)
        await pause(rig, paused.job_id)
        failed = (await rig.run_job(song))[-1]
        assert failed.state == pb.JOB_STATE_FAILED
        busy = await rig.submit(song)
        await separating(rig, busy.job_id, calls=3)
        for error in (
            await refused(rig.stub.ResumeJob, pb.ResumeJobRequest(job_id=paused.job_id)),
            await refused(rig.stub.RetryJob, pb.RetryJobRequest(job_id=failed.job_id)),
        ):
            assert error.code() == Code.RESOURCE_EXHAUSTED
            assert "1 jobs are running or queued" in error.details()
        assert state(rig, paused.job_id) == pb.JOB_STATE_PAUSED
        assert state(rig, failed.job_id) == pb.JOB_STATE_FAILED
        await rig.stub.CancelJob(pb.CancelJobRequest(job_id=busy.job_id))
    finally:
        await rig.stop()
