"""A job's overall percent and ETA from its stages' own percents.

Each stage is expected to take `overhead + speed * song seconds`, with the speed learned per stage
and per kind of work (the model; for transcription, aligning the user's lyrics is another kind) as
the median of that kind's recent runs, so one pathological job does not move the next job's guess.
The expected seconds weigh the stages in the overall percent; a running stage's own measured rate
takes over its remaining time once it has made some progress, and the stages still to come are
scaled by how this job has paced so far. Several stages may run at once (overlap).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import NamedTuple

from roar.v1 import orchestrator_pb2 as pb

STAGES = (pb.STAGE_SEPARATION, pb.STAGE_TRANSCRIPTION, pb.STAGE_KARAOKE)
# The kind of transcription work when the user gave lyrics: forced alignment, whatever the model.
LYRICS_KIND = "lyrics"
# Starting guesses in seconds of compute per second of audio (CPU, 2 threads, htdemucs and a
# Whisper on music), used for a kind of work with no finished runs yet.
DEFAULT_SPEEDS = {pb.STAGE_SEPARATION: 0.75, pb.STAGE_TRANSCRIPTION: 0.3, pb.STAGE_KARAOKE: 0.002}
DEFAULT_LYRICS_SPEED = 0.07  # pocketsphinx: about 0.5 s per 7 s
# The kind of karaoke work that also renders karaoke.mp4, and its starting guess (ffmpeg, libx264
# veryfast, 1280x720 at 25 frames/s: about 0.2 s per second of song on 2 cores).
VIDEO_KIND = "video"
DEFAULT_VIDEO_SPEED = 0.25
# Fixed seconds per stage whatever the song's length (connection, decoding, a warm model).
STAGE_OVERHEAD_SECONDS = {pb.STAGE_SEPARATION: 1.0, pb.STAGE_TRANSCRIPTION: 1.0, pb.STAGE_KARAOKE: 0.3}
# The speed of a kind is the median of its last this many runs.
HISTORY_RUNS = 9
# A running stage's measured rate is believed in full after this many percent of its own progress
# (counted after its start-up); before, it is blended with the learned guess.
MEASURED_AFTER_PERCENT = 10.0
# How far a job's pace (actual over expected seconds) may scale the stages still to come.
PACE_LIMITS = (0.5, 2.0)


class StageTime(NamedTuple):
    """One finished stage run, as the store keeps it: the history speeds are learned from."""

    stage: int
    kind: str
    audio_seconds: float
    seconds: float


def work_kinds(options: pb.JobOptions) -> dict[int, str]:
    """The kind of work each stage does for these options ('' model: the server's default)."""
    return {
        pb.STAGE_SEPARATION: options.separation_model or "default",
        pb.STAGE_TRANSCRIPTION: LYRICS_KIND if options.lyrics else options.transcription_model or "default",
        pb.STAGE_KARAOKE: VIDEO_KIND if options.karaoke_video else "karaoke",
    }


class LearnedSpeeds:
    """Seconds of compute per second of audio for each (stage, kind): the median of the recent runs
    (newest first in `runs`), or a default for a kind never seen."""

    def __init__(self, runs: Iterable[StageTime]) -> None:
        samples: dict[tuple[int, str], list[float]] = {}
        for run in runs:
            if run.audio_seconds <= 0:
                continue
            measured = max(run.seconds - STAGE_OVERHEAD_SECONDS[run.stage], 0.0) / run.audio_seconds
            kind_samples = samples.setdefault((run.stage, run.kind), [])
            if len(kind_samples) < HISTORY_RUNS:
                kind_samples.append(measured)
        self._speeds = {key: statistics.median(values) for key, values in samples.items()}

    def speed(self, stage: int, kind: str) -> float:
        learned = self._speeds.get((stage, kind))
        if learned is not None:
            return learned
        if kind == LYRICS_KIND:
            return DEFAULT_LYRICS_SPEED
        return DEFAULT_VIDEO_SPEED if kind == VIDEO_KIND else DEFAULT_SPEEDS[stage]

    def expected_seconds(self, stage: int, kind: str, audio_seconds: float) -> float:
        return STAGE_OVERHEAD_SECONDS[stage] + self.speed(stage, kind) * audio_seconds

    def learned(self, stage: int, kind: str) -> bool:
        """Whether finished runs of this kind were seen (else its speed is a default guess)."""
        return (stage, kind) in self._speeds

    def job_seconds(self, options: pb.JobOptions, audio_seconds: float) -> float | None:
        """How long a job with these options takes from start to end, the stages one after the
        other (as JobProgress.eta() counts a job not started); None while any of its kinds of work
        has only a default guess: a queue's wait is told only from speeds this server measured."""
        kinds = work_kinds(options)
        if not all(self.learned(stage, kinds[stage]) for stage in STAGES):
            return None
        return sum(self.expected_seconds(stage, kinds[stage], audio_seconds) for stage in STAGES)


@dataclass
class _Running:
    started: float
    # The measured rate counts from here: after the stage's fixed start-up (connection, decoding,
    # which its percent does not show), from the percent it started at.
    anchor_time: float
    anchor_percent: float
    # The percent the stage started from: a resumed stage starts part-way.
    first_percent: float
    percent: float


class JobProgress:
    """Overall percent and ETA of one job.

    `start(stage)` (`start(stage, percent)` for a stage resumed part-way), then `update(stage,
    percent)` as the stage reports, then `finish(stage)` (which returns the run to store) or
    `skip(stage)` (done earlier, failed, or not needed). Several stages may be running at once.
    `overall()` never goes backwards; `eta()` is the seconds until the job ends.
    """

    def __init__(
        self,
        duration: float,
        kinds: dict[int, str],
        speeds: LearnedSpeeds,
        clock: Callable[[], float] = time.monotonic,
        shown: float = 0.0,
    ) -> None:
        """`shown`: the overall percent clients have seen already (a resumed job)."""
        self._clock = clock
        self._duration = duration
        self._kinds = kinds
        self._shown = shown
        self.expected = {s: speeds.expected_seconds(s, kinds[s], duration) for s in STAGES}
        total = sum(self.expected.values())
        self.weights = {s: self.expected[s] / total for s in STAGES}
        self._running: dict[int, _Running] = {}
        self._ended: set[int] = set()
        # Actual and expected seconds of the stages that finished in this job: its pace.
        self._actual_seconds = 0.0
        self._expected_seconds = 0.0

    def start(self, stage: int, percent: float = 0.0) -> None:
        now = self._clock()
        self._running[stage] = _Running(now, now + STAGE_OVERHEAD_SECONDS[stage], percent, percent, percent)

    def update(self, stage: int, percent: float) -> None:
        """A started stage's own percent (0-100); a late report of an ended stage is ignored. A stage
        that starts again from zero (a retry) holds the overall percent until it has caught up."""
        if stage in self._ended:
            return
        running = self._running[stage]
        percent = min(max(percent, 0.0), 100.0)
        if percent < running.percent:  # started again (a retry): measure afresh from here
            running.anchor_time, running.anchor_percent = self._clock(), percent
        running.percent = percent
        self._raise_shown()

    def finish(self, stage: int) -> StageTime:
        """Marks the started stage done; returns its run for the history (a stage resumed part-way
        counts the audio it did in this run)."""
        running = self._running.pop(stage)
        self._ended.add(stage)
        self._raise_shown()
        elapsed = self._clock() - running.started
        share = 1.0 - running.first_percent / 100.0
        self._actual_seconds += elapsed
        self._expected_seconds += self.expected[stage] * share
        return StageTime(stage, self._kinds[stage], self._duration * share, elapsed)

    def skip(self, stage: int) -> None:
        """Counts a stage as ended without timing it."""
        self._running.pop(stage, None)
        self._ended.add(stage)
        self._raise_shown()

    def stage_percent(self, stage: int) -> float:
        if stage in self._ended:
            return 100.0
        running = self._running.get(stage)
        return running.percent if running is not None else 0.0

    def overall(self) -> float:
        return self._shown

    def _raise_shown(self) -> None:
        weighted = sum(self.weights[s] * self.stage_percent(s) for s in STAGES)
        self._shown = max(self._shown, min(100.0, weighted))

    def _pace(self) -> float:
        """How much slower (> 1) or faster than expected this job runs, from its finished stages
        and the measured rates of its running ones."""
        actual, expected = self._actual_seconds, self._expected_seconds
        now = self._clock()
        for stage, running in self._running.items():
            measured = self._measured_remaining(running, now)
            if measured is not None:
                confidence = self._confidence(running)
                actual += confidence * (now - running.started + measured)
                expected += confidence * self.expected[stage] * (1.0 - running.first_percent / 100.0)
        if expected <= 0.0:
            return 1.0
        return min(max(actual / expected, PACE_LIMITS[0]), PACE_LIMITS[1])

    @staticmethod
    def _measured_remaining(running: _Running, now: float) -> float | None:
        if now <= running.anchor_time or running.percent <= running.anchor_percent:
            return None
        rate = (running.percent - running.anchor_percent) / max(now - running.anchor_time, 1e-6)
        return (100.0 - running.percent) / rate

    @staticmethod
    def _confidence(running: _Running) -> float:
        return min(1.0, (running.percent - running.anchor_percent) / MEASURED_AFTER_PERCENT)

    def _remaining(self, stage: int, pace: float, now: float) -> float:
        """Seconds until the stage ends, on its own."""
        if stage in self._ended:
            return 0.0
        expected = self.expected[stage] * pace
        running = self._running.get(stage)
        if running is None:
            return expected
        # The learned guess: the share not done yet, or the expected time left since it started when
        # that is more (its percent runs ahead of the clock).
        from_start = expected * (1.0 - running.first_percent / 100.0) - (now - running.started)
        guess = max(expected * (1.0 - running.percent / 100.0), from_start)
        measured = self._measured_remaining(running, now)
        if measured is None:
            return guess
        confidence = self._confidence(running)
        return confidence * measured + (1.0 - confidence) * guess

    def eta(self) -> float:
        """Seconds until the job ends: the stages run in order, and a stage ends no sooner than the
        one before it (overlapping stages wait for their input)."""
        now = self._clock()
        pace = self._pace()
        ends = 0.0
        for stage in STAGES:
            own = self._remaining(stage, pace, now)
            ends = ends + own if stage not in self._running else max(ends, own)
        return ends
