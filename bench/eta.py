"""How far the job ETA is off: a mixed sequence of jobs replayed through the progress model.

    python -m bench.eta [--jobs 40] [--seed 9]

No services run: each job is a script of stage reports (seconds since the stage started, the
stage's percent) drawn from the shapes the real stages have, and a fake clock walks through them.
Separation reports window after window at an even pace after decoding; transcription reports when a
voiced passage is done (instrumental stretches pass at once, passages cost unevenly); aligning the
user's lyrics and building the karaoke files are short. The mix: songs of 20 s to 10 min, two
separation models, with and without lyrics, jobs whose pace changes half-way through a stage (the
machine gets busy or frees up), and one pathological job: an instrumental clip whose transcription
takes 10 times longer than usual. Speeds are learned across the sequence as the server learns them.

The error of a job at a point (10 % or 50 % of its actual length) is |predicted end - actual end| /
actual time left, with the prediction being the ETA of the last report before that point.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.progress import JobProgress, LearnedSpeeds, StageTime, work_kinds
from roar.v1 import orchestrator_pb2 as pb

SEED = 9
JOBS = 40
# Where in each job the ETA is judged, as shares of the job's actual length; and the targets.
POINTS = (0.1, 0.5)
TARGET_MEDIAN_ERROR = {0.1: 0.25, 0.5: 0.15}
# The jobs' stage speeds in seconds per second of audio (2 CPU threads; Whisper tiny.en on songs).
SEPARATION_SPEEDS = {"spleeter:2stems": 0.12, "htdemucs": 0.75}
TRANSCRIPTION_SPEED = 0.1
PATHOLOGICAL_SLOWDOWN = 10.0
ALIGNMENT_SPEED = 0.07
KARAOKE_SPEED = 0.002
SONG_SECONDS = (20, 45, 90, 180, 240, 360, 600)
SEPARATION_WINDOW_SECONDS = 10.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class StageScript:
    stage: int
    # (seconds since the stage started, the stage's percent), in order; the last one is the end.
    reports: list[tuple[float, float]]

    @property
    def seconds(self) -> float:
        return self.reports[-1][0]


@dataclass
class JobScript:
    label: str
    duration: float
    options: pb.JobOptions
    stages: list[StageScript] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


class Progress(Protocol):
    """What the replay needs of a progress model (orchestrator.progress.JobProgress)."""

    def start(self, stage: int) -> None: ...
    def update(self, stage: int, percent: float) -> None: ...
    def finish(self, stage: int) -> StageTime | None: ...
    def eta(self) -> float | None: ...


class Learner(Protocol):
    """Makes each job's progress model from what the jobs before it taught."""

    def progress(self, job: JobScript, clock: Clock) -> Progress: ...
    def learn(self, run: StageTime | None) -> None: ...


class StoreHistory:
    """The orchestrator's way: finished stage runs kept newest first, speeds learned from them."""

    def __init__(self) -> None:
        self.runs: list[StageTime] = []

    def progress(self, job: JobScript, clock: Clock) -> Progress:
        return JobProgress(job.duration, work_kinds(job.options), LearnedSpeeds(self.runs), clock)

    def learn(self, run: StageTime | None) -> None:
        if run is not None:
            self.runs.insert(0, run)


def _spread(rng: random.Random, sigma: float) -> float:
    return math.exp(rng.gauss(0.0, sigma))


def _paced(costs: list[float], change_at: float | None, factor: float) -> list[float]:
    """Scales the costs of the steps after `change_at` (a share of the steps) by `factor`."""
    if change_at is None:
        return costs
    first_changed = int(len(costs) * change_at)
    return [c * factor if i >= first_changed else c for i, c in enumerate(costs)]


def _reports(
    overhead: float, costs: list[float], percents: list[float], tail: float
) -> list[tuple[float, float]]:
    reports, now = [(0.0, 0.0)], overhead
    for cost, percent in zip(costs, percents, strict=True):
        now += cost
        reports.append((now, percent))
    reports.append((now + tail, 100.0))
    return reports


def separation(rng: random.Random, speed: float, duration: float, pace_change: tuple[float, float] | None):
    windows = max(1, math.ceil(duration / SEPARATION_WINDOW_SECONDS))
    costs = [speed * duration / windows * _spread(rng, 0.05) for _ in range(windows)]
    change_at, factor = pace_change if pace_change else (None, 1.0)
    costs = _paced(costs, change_at, factor)
    percents = [100.0 * (i + 1) / windows for i in range(windows)]
    decoding = 0.8 + 0.004 * duration
    return StageScript(pb.STAGE_SEPARATION, _reports(decoding, costs, percents, tail=0.01 * duration))


def transcription(rng: random.Random, speed: float, duration: float, pace_change: tuple[float, float] | None):
    """Voiced passages between instrumental stretches; a passage's cost varies a lot (Whisper's
    temperature fallbacks), the stretches between cost nothing."""
    ends, voiced, position = [], [], rng.uniform(2.0, min(15.0, duration / 3))
    while position < duration:
        length = min(rng.uniform(3.0, 20.0), duration - position)
        voiced.append(length)
        position += length
        ends.append(position)
        position += rng.uniform(1.0, 12.0)
    weights = [length * _spread(rng, 0.4) for length in voiced]
    costs = [speed * duration * w / sum(weights) for w in weights]
    change_at, factor = pace_change if pace_change else (None, 1.0)
    costs = _paced(costs, change_at, factor)
    percents = [100.0 * min(end, duration) / duration for end in ends]
    return StageScript(pb.STAGE_TRANSCRIPTION, _reports(0.8, costs, percents, tail=0.05))


def alignment(rng: random.Random, speed: float, duration: float):
    lines = 10
    costs = [speed * duration / lines * _spread(rng, 0.2) for _ in range(lines)]
    percents = [100.0 * (i + 1) / lines for i in range(lines)]
    return StageScript(pb.STAGE_TRANSCRIPTION, _reports(0.4, costs, percents, tail=0.02))


def karaoke(speed: float, duration: float):
    return StageScript(pb.STAGE_KARAOKE, _reports(0.25, [speed * duration], [100.0], tail=0.0))


def make_jobs(count: int = JOBS, seed: int = SEED) -> list[JobScript]:
    rng = random.Random(seed)
    pathological = count // 3
    jobs = []
    for index in range(count):
        duration = float(rng.choice(SONG_SECONDS))
        model = rng.choices(list(SEPARATION_SPEEDS), weights=(0.7, 0.3))[0]
        lyrics = index != pathological and rng.random() < 0.35
        machine = _spread(rng, 0.15)  # how busy the machine is for this job
        changing = rng.random() < 0.2
        options = pb.JobOptions(separation_model=model, lyrics="la la\n" if lyrics else "")
        label = f"{int(duration)} s, {model}, {'lyrics' if lyrics else 'no lyrics'}"
        pace_change = (rng.uniform(0.3, 0.7), rng.choice((0.5, 2.0))) if changing else None
        if changing:
            label += f", pace x{pace_change[1]:g} from {pace_change[0]:.0%}"
        if index == pathological:
            duration = 30.0
            label = "30 s instrumental clip, transcription 10x slower"
        job = JobScript(label, duration, options)
        separation_speed = SEPARATION_SPEEDS[model] * machine * _spread(rng, 0.08)
        change_separation = pace_change if rng.random() < 0.5 else None
        job.stages.append(separation(rng, separation_speed, duration, change_separation))
        # A machine that got busy (or free) during separation stays so for the later stages.
        machine *= change_separation[1] if change_separation else 1.0
        if lyrics:
            job.stages.append(alignment(rng, ALIGNMENT_SPEED * machine, duration))
        else:
            speed = TRANSCRIPTION_SPEED * machine * _spread(rng, 0.15)
            if index == pathological:
                speed *= PATHOLOGICAL_SLOWDOWN
            change_transcription = pace_change if change_separation is None else None
            job.stages.append(transcription(rng, speed, duration, change_transcription))
        job.stages.append(karaoke(KARAOKE_SPEED * machine, duration))
        jobs.append(job)
    return jobs


def replay_job(job: JobScript, learner: Learner) -> list[tuple[float, float | None]]:
    """Walks the job's reports on a fake clock; returns (seconds since the job began, ETA)."""
    clock = Clock()
    progress = learner.progress(job, clock)
    estimates = []
    begun = 0.0
    for script in job.stages:
        clock.now = begun
        progress.start(script.stage)
        estimates.append((clock.now, progress.eta()))
        for at, percent in script.reports:
            clock.now = begun + at
            progress.update(script.stage, percent)
            estimates.append((clock.now, progress.eta()))
        learner.learn(progress.finish(script.stage))
        begun += script.seconds
    return estimates


def error_at(estimates: Sequence[tuple[float, float | None]], total: float, share: float) -> float:
    """The relative error of the end predicted by the last ETA shown before `share` of the job."""
    point = share * total
    shown = [(at, eta) for at, eta in estimates if at <= point and eta is not None]
    if not shown:
        return math.inf
    at, eta = shown[-1]
    return abs(at + eta - total) / (total - point)


@dataclass
class Result:
    errors: dict[float, list[float]]
    labels: list[str]

    def median(self, share: float) -> float:
        return statistics.median(self.errors[share])

    def worst(self, share: float) -> tuple[float, str]:
        errors = self.errors[share]
        index = max(range(len(errors)), key=errors.__getitem__)
        return errors[index], self.labels[index]

    def meets_targets(self) -> bool:
        return all(self.median(share) <= TARGET_MEDIAN_ERROR[share] for share in POINTS)


def run(jobs: Sequence[JobScript], learner: Learner) -> Result:
    errors: dict[float, list[float]] = {share: [] for share in POINTS}
    for job in jobs:
        estimates = replay_job(job, learner)
        for share in POINTS:
            errors[share].append(error_at(estimates, job.seconds, share))
    return Result(errors, [job.label for job in jobs])


def table(results: dict[str, Result]) -> str:
    lines = [
        "| model | median at 10 % | worst at 10 % | median at 50 % | worst at 50 % |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, result in results.items():
        cells = []
        for share in POINTS:
            cells += [f"{result.median(share):.0%}", f"{result.worst(share)[0]:.0%}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None, learner: Callable[[], Learner] = StoreHistory) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=JOBS)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    jobs = make_jobs(args.jobs, args.seed)
    result = run(jobs, learner())
    print(f"{len(jobs)} jobs, seed {args.seed}\n")
    print(table({"orchestrator.progress": result}))
    for share in POINTS:
        error, label = result.worst(share)
        print(f"worst at {share:.0%}: {error:.0%} ({label})")
    targets = ", ".join(f"median at {s:.0%} <= {TARGET_MEDIAN_ERROR[s]:.0%}" for s in POINTS)
    print(f"targets ({targets}): {'met' if result.meets_targets() else 'NOT met'}")
    return 0 if result.meets_targets() else 1


if __name__ == "__main__":
    raise SystemExit(main())
