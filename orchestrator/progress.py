"""Maps each stage's own percent onto the job's overall percent and ETA.

Stages are weighted by how long they are expected to take for this song: seconds of compute per
second of audio, learned from finished jobs (SQLite), so overall percent moves at an even pace and
the ETA covers the stages still to come.
"""

from __future__ import annotations

import time

from roar.v1 import orchestrator_pb2 as pb

STAGES = (pb.STAGE_SEPARATION, pb.STAGE_TRANSCRIPTION, pb.STAGE_KARAOKE)
# Starting guesses (CPU, 2 threads, htdemucs + whisper-small), replaced as jobs finish.
DEFAULT_SPEEDS = {pb.STAGE_SEPARATION: 0.75, pb.STAGE_TRANSCRIPTION: 0.3, pb.STAGE_KARAOKE: 0.02}
# Fixed seconds per stage (connection, decoding, model already warm).
STAGE_OVERHEAD_SECONDS = 1.0
LEARNING_RATE = 0.5


class JobProgress:
    def __init__(
        self, duration: float, speeds: dict[int, float], clock=time.monotonic, shown: float = 0.0
    ) -> None:
        """`shown`: the overall percent clients have seen already (a resumed job)."""
        self._clock = clock
        self._shown = shown
        speeds = {**DEFAULT_SPEEDS, **speeds}
        self.expected = {s: STAGE_OVERHEAD_SECONDS + speeds[s] * duration for s in STAGES}
        total = sum(self.expected.values())
        self._weights = {s: self.expected[s] / total for s in STAGES}
        self._done_weight = 0.0
        self._stage = pb.STAGE_UNSPECIFIED
        self._stage_weight = 0.0
        self._stage_start = clock()
        # Actual / expected time of the finished stages: scales the later stages' guesses.
        self._pace = 1.0

    def start(self, stage: int) -> None:
        self._stage = stage
        self._stage_weight = self._weights[stage]
        self._stage_start = self._clock()

    def finish(self, stage: int) -> float:
        """Marks the stage done; returns how long it took."""
        elapsed = self._clock() - self._stage_start
        self.skip(stage)
        self._pace = max(0.2, min(5.0, elapsed / max(self.expected[stage], 1e-3)))
        return elapsed

    def skip(self, stage: int) -> None:
        self._done_weight += self._weights[stage]
        if stage == self._stage:
            self._stage_weight = 0.0  # counted in _done_weight now

    def overall(self, stage_percent: float) -> float:
        """Never less than before: a stage that starts again from zero (a retry, a resumed job)
        holds the overall percent until it has caught up."""
        current = self._stage_weight * stage_percent / 100.0
        self._shown = max(self._shown, min(100.0, 100.0 * (self._done_weight + current)))
        return self._shown

    def eta(self, stage_percent: float, stage_eta: float | None) -> float:
        if stage_eta is None:
            elapsed = self._clock() - self._stage_start
            if stage_percent >= 1.0:
                stage_eta = elapsed * (100.0 - stage_percent) / stage_percent
            else:
                stage_eta = max(0.0, self.expected[self._stage] * self._pace - elapsed)
        later = STAGES[STAGES.index(self._stage) + 1 :] if self._stage in STAGES else ()
        return stage_eta + sum(self.expected[s] * self._pace for s in later)


def learned_speed(old: float, elapsed: float, duration: float) -> float:
    """Moves a stage's seconds-per-audio-second towards what the last job measured."""
    measured = max(elapsed - STAGE_OVERHEAD_SECONDS, 0.0) / max(duration, 1e-3)
    return (1 - LEARNING_RATE) * old + LEARNING_RATE * measured
