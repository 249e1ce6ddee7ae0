"""A queued job's place in line and expected wait, in its events: the orchestrator of
tests/test_orchestrator.py (its Rig: fake stages on loopback, the real pipeline and store) with one
worker, so the jobs after the first wait."""

from __future__ import annotations

import io
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from roar.cli import ProgressView
from roar.v1 import orchestrator_pb2 as pb
from tests.support.songs import write_song
from tests.test_orchestrator import HANGS, SONG_SECONDS, Rig, running_rig, separating

PLACE = re.compile(r"queued: (\d+)(?:st|nd|rd|th) in line(?:, about (?:\d+ min )?\d+ s to wait)?$")


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with running_rig(tmp_path / "data", max_running_jobs=1) as running:
        yield running


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_song(tmp_path_factory.mktemp("song") / "song.wav", SONG_SECONDS)


def queued_events(events: list[pb.ProgressEvent]) -> list[pb.ProgressEvent]:
    return [e for e in events if e.message.startswith("queued:")]


def places(events: list[pb.ProgressEvent]) -> list[int]:
    """The place each queued event tells (every one must say it in the expected words)."""
    told = []
    for event in queued_events(events):
        match = PLACE.match(event.message)
        assert match, event.message
        assert event.state == pb.JOB_STATE_QUEUED
        told.append(int(match.group(1)))
    return told


async def submit_queued(rig: Rig, song: Path) -> pb.ProgressEvent:
    """Submits a job and waits until it is in the queue (its task told it a place)."""
    first = await rig.submit(song)
    await rig.wait_for(lambda: rig.store.get_job(first.job_id).last_event.message.startswith("queued:"))
    return first


async def test_a_queued_job_moves_up_as_the_jobs_ahead_start(rig: Rig, song: Path) -> None:
    rig.separation.script.behaviours = [HANGS, HANGS]
    first = await rig.submit(song)
    await separating(rig, first.job_id, calls=1)
    second = await submit_queued(rig, song)
    third = await submit_queued(rig, song)
    assert rig.store.get_job(second.job_id).last_event.message == "queued: 1st in line"
    assert rig.store.get_job(third.job_id).last_event.message == "queued: 2nd in line"

    await rig.stub.CancelJob(pb.CancelJobRequest(job_id=first.job_id))  # the second starts
    await separating(rig, second.job_id, calls=2)
    await rig.wait_for(lambda: rig.store.get_job(third.job_id).last_event.message == "queued: 1st in line")
    await rig.stub.CancelJob(pb.CancelJobRequest(job_id=second.job_id))  # the third starts and ends

    events = await rig.follow(third.job_id)
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED, events[-1]
    assert [e.seq for e in events] == sorted({e.seq for e in events})
    # Told 2nd then 1st, once each: no event while its place did not change (the second job's
    # start told it nothing new until the first one left).
    assert places(events) == [2, 1]
    # No stage run finished on this server yet: no speed measured, so no time is promised.
    assert not any(e.HasField("eta_seconds") for e in queued_events(events))
    assert places(await rig.follow(second.job_id)) == [1]
    assert places(await rig.follow(first.job_id)) == []  # it found a free worker


async def test_a_cancel_ahead_moves_a_job_up_and_learned_speeds_tell_the_wait(rig: Rig, song: Path) -> None:
    # One job run through, so every stage's speed is measured for jobs like these.
    assert (await rig.run_job(song))[-1].state == pb.JOB_STATE_SUCCEEDED
    rig.separation.script.behaviours = [HANGS]
    first = await rig.submit(song)
    await separating(rig, first.job_id, calls=2)  # the run-through made the first call
    second = await submit_queued(rig, song)
    third = await submit_queued(rig, song)
    second_told = rig.store.get_job(second.job_id).last_event
    third_told = rig.store.get_job(third.job_id).last_event
    assert re.match(r"queued: 1st in line, about (\d+ min )?\d+ s to wait$", second_told.message)
    assert re.match(r"queued: 2nd in line, about (\d+ min )?\d+ s to wait$", third_told.message)
    # The third waits for the second's whole run too: the second's ETA (its wait and run) is in it.
    assert second_told.HasField("eta_seconds") and third_told.HasField("eta_seconds")
    assert 0 < second_told.eta_seconds < third_told.eta_seconds

    await rig.stub.CancelJob(pb.CancelJobRequest(job_id=second.job_id))  # the job ahead leaves
    await rig.wait_for(lambda: rig.store.get_job(third.job_id).last_event.message.startswith("queued: 1st"))
    moved_up = rig.store.get_job(third.job_id).last_event
    assert 0 < moved_up.eta_seconds < third_told.eta_seconds
    await rig.stub.CancelJob(pb.CancelJobRequest(job_id=first.job_id))

    events = await rig.follow(third.job_id)
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED, events[-1]
    assert [e.seq for e in events] == sorted({e.seq for e in events})
    assert places(events) == [2, 1]
    assert (await rig.follow(second.job_id))[-1].state == pb.JOB_STATE_CANCELLED


def test_the_cli_prints_each_place_in_line_with_its_eta() -> None:
    out = io.StringIO()  # not a terminal: plain log lines
    view = ProgressView(out)
    queued = [
        pb.ProgressEvent(
            stage=pb.STAGE_UPLOAD, stage_percent=100.0, message=message, state=pb.JOB_STATE_QUEUED
        )
        for message in (
            "received song.wav",
            "queued: 2nd in line, about 1 min 30 s to wait",
            "queued: 1st in line",
        )
    ]
    queued[1].eta_seconds = 125.0
    for update in queued:
        view.update(update)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert "ETA 2:05" in lines[1] and lines[1].endswith("queued: 2nd in line, about 1 min 30 s to wait")
    assert "ETA" not in lines[2] and lines[2].endswith("queued: 1st in line")
