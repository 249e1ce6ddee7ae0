"""Overall percent and ETA of a job from its stages' own percents (no server needed), the stage runs
the store keeps for it, and how the CLI shows the ETA."""

from __future__ import annotations

import io
import random
import sqlite3
from pathlib import Path

import pytest

from orchestrator.progress import (
    HISTORY_RUNS,
    STAGE_OVERHEAD_SECONDS,
    STAGES,
    JobProgress,
    LearnedSpeeds,
    StageTime,
    work_kinds,
)
from orchestrator.store import Store
from roar.cli import ProgressView
from roar.v1 import orchestrator_pb2 as pb

SEPARATION, TRANSCRIPTION, KARAOKE = STAGES
NO_LYRICS = pb.JobOptions(separation_model="htdemucs", transcription_model="whisper")
WITH_LYRICS = pb.JobOptions(separation_model="htdemucs", transcription_model="whisper", lyrics="la la")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def runs_at(stage: int, kind: str, speeds: list[float], audio_seconds: float = 100.0) -> list[StageTime]:
    """Finished runs of one kind that took `speed` seconds per second of audio (after the overhead)."""
    overhead = STAGE_OVERHEAD_SECONDS[stage]
    return [StageTime(stage, kind, audio_seconds, overhead + s * audio_seconds) for s in speeds]


def test_overall_percent_never_goes_backwards_through_retries_and_overlap() -> None:
    rng = random.Random(4)
    clock = Clock()
    progress = JobProgress(120.0, work_kinds(NO_LYRICS), LearnedSpeeds([]), clock=clock)
    seen = [progress.overall()]
    # Separation alone, then transcription overlapping it, then karaoke once separation has ended.
    starts = {0: SEPARATION, 100: TRANSCRIPTION, 250: KARAOKE}
    percents: dict[int, float] = {}
    for step in range(400):
        clock.now += 0.5
        if step in starts:
            progress.start(starts[step])
            percents[starts[step]] = 0.0
        for stage, percent in list(percents.items()):
            # Mostly forward, sometimes a retry that starts the stage again from zero.
            retry = rng.random() < 0.02 and percent < 90.0
            percents[stage] = 0.0 if retry else min(100.0, percent + rng.uniform(0, 3))
            progress.update(stage, percents[stage])
            seen.append(progress.overall())
            if percents[stage] == 100.0 and (stage != TRANSCRIPTION or SEPARATION not in percents):
                progress.finish(stage)
                del percents[stage]
                seen.append(progress.overall())
    assert not percents, "every stage ended"
    assert seen == sorted(seen)
    assert seen[0] == 0.0 and seen[-1] == pytest.approx(100.0)


def test_overall_percent_is_the_stage_percents_weighted_by_expected_seconds() -> None:
    clock = Clock()
    speeds = LearnedSpeeds(runs_at(SEPARATION, "htdemucs", [0.5]) + runs_at(TRANSCRIPTION, "whisper", [0.2]))
    progress = JobProgress(60.0, work_kinds(NO_LYRICS), speeds, clock=clock)
    assert progress.expected[SEPARATION] == pytest.approx(STAGE_OVERHEAD_SECONDS[SEPARATION] + 0.5 * 60)
    total = sum(progress.expected.values())
    assert progress.weights == {s: pytest.approx(progress.expected[s] / total) for s in STAGES}
    w = progress.weights

    progress.start(SEPARATION)
    progress.update(SEPARATION, 40.0)
    assert progress.overall() == pytest.approx(100 * w[SEPARATION] * 0.4)
    # Two stages at once: each adds its weight times its own percent.
    progress.start(TRANSCRIPTION)
    progress.update(SEPARATION, 80.0)
    progress.update(TRANSCRIPTION, 25.0)
    assert progress.overall() == pytest.approx(100 * (w[SEPARATION] * 0.8 + w[TRANSCRIPTION] * 0.25))
    progress.finish(SEPARATION)
    assert progress.overall() == pytest.approx(100 * (w[SEPARATION] + w[TRANSCRIPTION] * 0.25))
    progress.skip(TRANSCRIPTION)  # failed: counted as ended
    assert progress.overall() == pytest.approx(100 * (w[SEPARATION] + w[TRANSCRIPTION]))


def test_a_resumed_job_never_shows_less_than_it_had_shown() -> None:
    progress = JobProgress(60.0, work_kinds(NO_LYRICS), LearnedSpeeds([]), clock=Clock(), shown=42.0)
    progress.start(SEPARATION)
    progress.update(SEPARATION, 0.0)
    assert progress.overall() == 42.0
    progress.update(SEPARATION, 100.0)
    assert progress.overall() > 42.0


def test_a_measured_running_rate_dominates_the_learned_guess() -> None:
    clock = Clock()
    # Learned: 0.5 s per second of audio; this run goes four times slower.
    speeds = LearnedSpeeds(runs_at(SEPARATION, "htdemucs", [0.5] * 5))
    progress = JobProgress(100.0, work_kinds(NO_LYRICS), speeds, clock=clock)
    later = progress.expected[TRANSCRIPTION] + progress.expected[KARAOKE]
    progress.start(SEPARATION)
    assert progress.eta() == pytest.approx(progress.expected[SEPARATION] + later)
    started_work = STAGE_OVERHEAD_SECONDS[SEPARATION]
    for percent in range(1, 31):
        clock.now = started_work + percent * 2.0  # 2 s per percent: 200 s for the stage's work
        progress.update(SEPARATION, float(percent))
    measured = 70 * 2.0
    eta = progress.eta()
    # Its own remaining time is the measured one; the later stages are scaled by this job's pace
    # (slower than learned, clamped).
    assert eta == pytest.approx(measured + 2.0 * later, rel=0.01)
    assert eta > 2 * progress.expected[SEPARATION]


def test_a_stage_restarted_from_zero_is_measured_afresh() -> None:
    clock = Clock()
    speeds = LearnedSpeeds(runs_at(SEPARATION, "htdemucs", [0.5]))
    progress = JobProgress(100.0, work_kinds(NO_LYRICS), speeds, clock=clock)
    progress.start(SEPARATION)
    clock.now = 51.0
    progress.update(SEPARATION, 50.0)  # 1 % a second
    clock.now = 60.0
    progress.update(SEPARATION, 0.0)  # the replica died: the retry starts over
    clock.now = 80.0
    progress.update(SEPARATION, 40.0)  # 2 % a second since the retry
    # 80 s so far and 30 s to go, against 51 s expected: the later stages take twice (the limit) theirs.
    later = 2.0 * (progress.expected[TRANSCRIPTION] + progress.expected[KARAOKE])
    assert progress.eta() - later == pytest.approx(30.0)


def test_no_eta_is_left_once_every_stage_has_ended() -> None:
    clock = Clock()
    progress = JobProgress(30.0, work_kinds(NO_LYRICS), LearnedSpeeds([]), clock=clock)
    for stage in STAGES:
        progress.start(stage)
        clock.now += 5.0
        progress.update(stage, 100.0)
        before_finish = progress.eta()
        progress.finish(stage)
        assert progress.eta() <= before_finish
    assert progress.eta() == 0.0 and progress.overall() == pytest.approx(100.0)
    progress.update(KARAOKE, 50.0)  # a late report of an ended stage changes nothing
    assert progress.eta() == 0.0 and progress.overall() == pytest.approx(100.0)


def test_lyrics_and_transcription_speeds_are_learned_separately() -> None:
    history = runs_at(TRANSCRIPTION, "whisper", [0.4] * 4) + runs_at(TRANSCRIPTION, "lyrics", [0.01] * 4)
    speeds = LearnedSpeeds(history)
    with_lyrics = JobProgress(200.0, work_kinds(WITH_LYRICS), speeds, clock=Clock())
    without = JobProgress(200.0, work_kinds(NO_LYRICS), speeds, clock=Clock())
    assert with_lyrics.expected[TRANSCRIPTION] == pytest.approx(STAGE_OVERHEAD_SECONDS[TRANSCRIPTION] + 2.0)
    assert without.expected[TRANSCRIPTION] == pytest.approx(STAGE_OVERHEAD_SECONDS[TRANSCRIPTION] + 80.0)
    # The lyrics take the place of the model: any transcription model aligns them the same way.
    assert work_kinds(WITH_LYRICS)[TRANSCRIPTION] == work_kinds(pb.JobOptions(lyrics="x"))[TRANSCRIPTION]
    spleeter = pb.JobOptions(separation_model="spleeter")
    assert work_kinds(NO_LYRICS)[SEPARATION] != work_kinds(spleeter)[SEPARATION]


def test_one_pathological_job_does_not_poison_the_next_guess() -> None:
    normal = runs_at(TRANSCRIPTION, "whisper", [0.10, 0.12, 0.09, 0.11, 0.10])
    # Newest first: the instrumental clip whose transcription took 10 times longer came last.
    stalled = runs_at(TRANSCRIPTION, "whisper", [1.1])
    speeds = LearnedSpeeds(stalled + normal)
    assert speeds.speed(TRANSCRIPTION, "whisper") == pytest.approx(0.105, abs=0.006)


def test_only_the_recent_runs_of_a_kind_count() -> None:
    # Newest first: the machine got faster; the older runs fall out of the median.
    history = runs_at(SEPARATION, "htdemucs", [0.3] * HISTORY_RUNS + [0.9] * HISTORY_RUNS)
    assert LearnedSpeeds(history).speed(SEPARATION, "htdemucs") == pytest.approx(0.3)


def test_the_store_keeps_the_newest_runs_of_each_kind(tmp_path: Path) -> None:
    store = Store(tmp_path / "roar.sqlite")
    for index in range(5):
        store.add_stage_run(SEPARATION, "htdemucs", 60.0, 10.0 + index, keep=3)
    store.add_stage_run(TRANSCRIPTION, "lyrics", 60.0, 2.0, keep=3)
    runs = [StageTime._make(row) for row in store.stage_runs()]
    assert [r.seconds for r in runs if r.kind == "htdemucs"] == [14.0, 13.0, 12.0]
    assert StageTime(TRANSCRIPTION, "lyrics", 60.0, 2.0) in runs
    store.close()


def test_a_store_made_before_stage_runs_opens(tmp_path: Path) -> None:
    path = tmp_path / "roar.sqlite"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE stage_speed (stage INTEGER PRIMARY KEY, seconds_per_audio_second REAL)")
    old.execute("INSERT INTO stage_speed VALUES (2, 9.0)")
    old.commit()
    old.close()
    store = Store(path)
    assert store.stage_runs() == []
    store.add_stage_run(SEPARATION, "htdemucs", 60.0, 10.0, keep=HISTORY_RUNS)
    assert len(store.stage_runs()) == 1
    store.close()


def event(stage: int, percent: float, eta: float | None) -> pb.ProgressEvent:
    update = pb.ProgressEvent(stage=stage, stage_percent=percent, message="m")
    if eta is not None:
        update.eta_seconds = eta
    return update


def test_the_cli_shows_an_eta_only_on_a_running_stage() -> None:
    out = io.StringIO()
    view = ProgressView(out)
    view.update(event(SEPARATION, 50.0, 65.0))
    view.update(event(SEPARATION, 100.0, 30.0))  # done: whatever the event says, nothing is left
    view.update(event(pb.STAGE_COMPLETE, 100.0, 0.0))
    lines = out.getvalue().splitlines()
    assert "ETA 1:05" in lines[0]
    assert "ETA" not in lines[1] and "ETA" not in lines[2]
