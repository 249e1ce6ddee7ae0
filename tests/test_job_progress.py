"""Overall percent and ETA of a job from its stages' own percents (no server needed)."""

from __future__ import annotations

import pytest

from orchestrator.progress import STAGES, JobProgress, learned_speed


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_overall_percent_rises_steadily_through_the_stages() -> None:
    clock = Clock()
    progress = JobProgress(duration=60.0, speeds={}, clock=clock)
    seen = []
    for stage in STAGES:
        progress.start(stage)
        for percent in (0.0, 25.0, 50.0, 100.0):
            seen.append(progress.overall(percent))
        progress.finish(stage)
        seen.append(progress.overall(100.0))
    assert seen == sorted(seen)
    assert seen[0] == 0.0 and seen[-1] == pytest.approx(100.0)


def test_eta_counts_the_stages_still_to_come() -> None:
    clock = Clock()
    progress = JobProgress(duration=100.0, speeds={}, clock=clock)
    progress.start(STAGES[0])
    clock.now = 40.0
    # Half-way through separation after 40 s: 40 s more, plus the later stages' expected time.
    later = sum(progress.expected[s] for s in STAGES[1:])
    assert progress.eta(50.0, None) == pytest.approx(40.0 + later)
    # A stage that reports its own ETA is believed.
    assert progress.eta(50.0, 3.0) == pytest.approx(3.0 + later)
    progress.finish(STAGES[0])
    # Separation took 40 s of an expected 1 + 0.75 * 100: the later guesses shrink to match.
    pace = 40.0 / progress.expected[STAGES[0]]
    progress.start(STAGES[1])
    assert progress.eta(0.0, None) == pytest.approx(
        progress.expected[STAGES[1]] * pace + progress.expected[STAGES[2]] * pace
    )


def test_learned_speed_moves_towards_the_measurement() -> None:
    assert learned_speed(1.0, elapsed=21.0, duration=40.0) == pytest.approx(0.75)


def test_overall_percent_holds_while_a_stage_starts_again_from_zero() -> None:
    progress = JobProgress(duration=60.0, speeds={}, clock=Clock())
    progress.start(STAGES[0])
    reached = progress.overall(60.0)
    # The stage's service restarted: its percent begins again at 0.
    assert [progress.overall(p) for p in (0.0, 30.0, 60.0)] == [reached] * 3
    assert progress.overall(80.0) > reached


def test_a_resumed_job_never_shows_less_than_it_had_shown() -> None:
    progress = JobProgress(duration=60.0, speeds={}, clock=Clock(), shown=42.0)
    progress.start(STAGES[0])
    assert progress.overall(0.0) == 42.0
    assert progress.overall(100.0) > 42.0
