"""The pipeline: a table of stages (separation -> transcription -> karaoke), each an object that
names what it reads and what it writes, run in order for a job. Which stages finished (with their
small outputs) and the separation's checkpoint live in the store, so a resumed job goes on from
the stage, and the window, that was running."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.artifacts import ChunkFiles, JobFiles
from orchestrator.checkpoints import StemWindows
from orchestrator.events import MIN_EVENT_INTERVAL, Events
from orchestrator.progress import JobProgress, learned_speed
from orchestrator.stages import StageClients, StageFailed
from orchestrator.store import Store
from roar.audio import format_name
from roar.config import Settings
from roar.v1 import common_pb2, karaoke_pb2, separation_pb2, transcription_pb2
from roar.v1 import orchestrator_pb2 as pb

log = logging.getLogger("roar.orchestrator")

STAGE_NAMES = {
    pb.STAGE_SEPARATION: "separation",
    pb.STAGE_TRANSCRIPTION: "transcription",
    pb.STAGE_KARAOKE: "karaoke",
}


class Pace:
    """Every question the pipeline asks the ETA model (orchestrator/progress.py), in one place:
    stage weights and speeds learned from finished stages, overall percent and ETA."""

    def __init__(self, store: Store, duration: float, shown: float) -> None:
        self._store = store
        self._duration = duration
        self._progress = JobProgress(duration, store.stage_speeds(), shown=shown)

    def start(self, stage: int) -> None:
        self._progress.start(stage)

    def skip(self, stage: int) -> None:
        self._progress.skip(stage)

    def finish(self, stage: int) -> float:
        """Marks the stage done and learns its speed; returns how long it took."""
        elapsed = self._progress.finish(stage)
        speeds = self._store.stage_speeds()
        old = speeds.get(stage, self._progress.expected[stage] / max(self._duration, 1e-3))
        self._store.set_stage_speed(stage, learned_speed(old, elapsed, self._duration))
        return elapsed

    def overall(self, stage_percent: float) -> float:
        return self._progress.overall(stage_percent)

    def eta(self, stage_percent: float, stage_eta: float | None) -> float:
        return self._progress.eta(stage_percent, stage_eta)


@dataclass
class JobRun:
    """What the stages of one job run share."""

    job: pb.Job
    song: Path  # the upload's normalised audio
    directory: Path  # the job's files
    ext: str  # the stem files' format
    store: Store
    clients: StageClients
    events: Events
    pace: Pace


class StageReporter:
    """Turns a stage's progress updates into job events (merging quick repeats of one message)."""

    def __init__(self, run: JobRun, stage: int) -> None:
        self._run = run
        self._stage = stage
        self._time = 0.0
        self._message = ""
        self.percent = 0.0

    async def __call__(self, update: common_pb2.StageProgress) -> None:
        now = time.monotonic()
        if (
            update.message == self._message
            and now - self._time < MIN_EVENT_INTERVAL
            and update.percent < 100.0
        ):
            return
        self._time, self._message, self.percent = now, update.message, update.percent
        self.say(
            update.percent, update.message, update.eta_seconds if update.HasField("eta_seconds") else None
        )

    def say(self, percent: float, message: str, stage_eta: float | None = None) -> None:
        pace = self._run.pace
        self._run.events.emit(
            self._run.job,
            self._stage,
            percent,
            message,
            overall=pace.overall(percent),
            eta=pace.eta(percent, stage_eta),
        )


class Separate:
    """Reads the song; writes vocals.<ext>, instrumental.<ext> (and every stem with all_stems),
    encoded from the checkpoint files the windows went to."""

    stage = pb.STAGE_SEPARATION
    needs: tuple[int, ...] = ()
    required = True  # without stems the job fails

    async def run(self, run: JobRun, report: StageReporter, timeout: float) -> bytes | None:
        options = run.job.options
        windows = StemWindows(run.store, run.job.job_id, run.directory)
        if windows.layout is not None:
            count = windows.layout.window_count
            report.say(
                100.0 * windows.windows_done / count,
                f"separation resuming from window {windows.windows_done} of {count}",
            )
        if not windows.complete:
            request = separation_pb2.SeparationOptions(
                model=options.separation_model, all_stems=options.all_stems
            )
            await run.clients.separate(run.song, request, windows, report, timeout)
        if not windows.complete:
            done = windows.windows_done
            total = windows.layout.window_count if windows.layout else 0
            raise StageFailed("INTERNAL", f"the separation service ended after {done} of {total} windows")
        await windows.encode(run.ext)
        return None


class Transcribe:
    """Reads vocals.<ext> (streamed from disk); writes the transcript (kept in the store)."""

    stage = pb.STAGE_TRANSCRIPTION
    needs: tuple[int, ...] = ()
    required = False

    async def run(self, run: JobRun, report: StageReporter, timeout: float) -> bytes | None:
        options = run.job.options
        request = transcription_pb2.TranscriptionOptions(
            model=options.transcription_model, language=options.language, lyrics=options.lyrics
        )
        vocals = run.directory / f"vocals.{run.ext}"
        transcript = await run.clients.transcribe(vocals, request, report, timeout)
        return transcript.SerializeToString()


class BuildKaraoke:
    """Reads the transcript and the song's duration; writes the lyric files."""

    stage = pb.STAGE_KARAOKE
    needs = (pb.STAGE_TRANSCRIPTION,)
    required = False

    async def run(self, run: JobRun, report: StageReporter, timeout: float) -> bytes | None:
        job = run.job
        transcript = common_pb2.Transcript.FromString(
            run.store.stages_done(job.job_id)[pb.STAGE_TRANSCRIPTION] or b""
        )
        request = karaoke_pb2.KaraokeOptions(
            transcript=transcript,
            formats=job.options.lyrics_formats,
            title=Path(job.filename).stem,
            duration_seconds=job.audio.duration_seconds,
        )
        files = ChunkFiles(run.directory)
        try:
            await run.clients.build_karaoke(request, _FileReceiver(files), report, timeout)
        except BaseException:
            files.discard()
            raise
        files.commit()
        return None


class _FileReceiver:
    """A stages.Receiver writing FileChunks through ChunkFiles; a broken try's files are dropped."""

    def __init__(self, files: ChunkFiles) -> None:
        self._files = files

    def start_try(self) -> None:
        self._files.discard()

    async def receive(self, response: karaoke_pb2.BuildResponse) -> None:
        self._files.add(response.file)

    def kept(self) -> int:
        return 0

    def retry_note(self) -> str:
        return ""


Stage = Separate | Transcribe | BuildKaraoke
STAGES: tuple[Stage, ...] = (Separate(), Transcribe(), BuildKaraoke())


class Pipeline:
    def __init__(
        self, settings: Settings, store: Store, files: JobFiles, clients: StageClients, events: Events
    ) -> None:
        self._settings = settings
        self._store = store
        self._files = files
        self._clients = clients
        self._events = events

    async def run(self, job: pb.Job, song: Path) -> None:
        """Runs the job's stages that are not done yet, then finishes the job."""
        run = JobRun(
            job=job,
            song=song,
            directory=self._files.make(job.job_id),
            ext=format_name(job.options.audio_format),
            store=self._store,
            clients=self._clients,
            events=self._events,
            pace=Pace(self._store, job.audio.duration_seconds, job.last_event.overall_percent),
        )
        timeout = job.options.timeout_seconds or self._settings.job_timeout_seconds
        deadline = job.created.ToSeconds() + timeout
        for stage in STAGES:
            done = self._store.stages_done(job.job_id)
            name = STAGE_NAMES[stage.stage]
            if stage.stage in done or any(e.stage == stage.stage for e in job.errors):
                run.pace.skip(stage.stage)
                continue
            if any(need not in done for need in stage.needs):
                run.pace.skip(stage.stage)
                missing = ", ".join(STAGE_NAMES[n] for n in stage.needs if n not in done)
                self._events.emit(job, stage.stage, 0.0, f"{name} skipped: {missing} did not complete")
                continue
            if not await self._run_stage(run, stage, deadline) and stage.required:
                self.finish(job, pb.JOB_STATE_FAILED, f"failed: {name} did not complete")
                return
        if job.errors:
            failed = ", ".join(STAGE_NAMES[e.stage] for e in job.errors)
            self.finish(job, pb.JOB_STATE_PARTIAL, f"done, but {failed} failed")
        else:
            self.finish(job, pb.JOB_STATE_SUCCEEDED, "done")

    async def _run_stage(self, run: JobRun, stage: Stage, deadline: float) -> bool:
        """Runs one stage with live progress and records it done; on failure records the error
        and returns False."""
        job, name = run.job, STAGE_NAMES[stage.stage]
        run.pace.start(stage.stage)
        self._events.emit(job, stage.stage, 0.0, f"{name} starting", overall=run.pace.overall(0.0))
        report = StageReporter(run, stage.stage)
        try:
            remaining = deadline - time.time()
            if remaining <= 0:
                raise StageFailed("DEADLINE_EXCEEDED", "the job ran past its time limit")
            output = await stage.run(run, report, remaining)
        except StageFailed as exc:
            error = job.errors.add(code=exc.code, message=exc.message, stage=stage.stage)
            run.pace.skip(stage.stage)
            self._events.emit(job, stage.stage, report.percent, f"{name} failed: {exc.message}", error=error)
            return False
        self._store.finish_stage(job.job_id, stage.stage, output)
        self._files.remove_scratch(job.job_id)  # its checkpoint files are not needed any more
        elapsed = run.pace.finish(stage.stage)
        self._events.emit(
            job,
            stage.stage,
            100.0,
            f"{name} done in {elapsed:.1f} s",
            overall=run.pace.overall(100.0),
            eta=run.pace.eta(100.0, 0.0),
        )
        return True

    def finish(self, job: pb.Job, state: int, message: str) -> None:
        """The job's last event, with its files; what only an unfinished job needs is dropped."""
        job.state = state
        del job.artifacts[:]
        job.artifacts.extend(self._files.artifacts(job.job_id))
        error = job.errors[0] if job.errors and state != pb.JOB_STATE_SUCCEEDED else None
        if state == pb.JOB_STATE_PARTIAL:
            error = None  # the COMPLETE event lists what failed in `errors`
        overall = 100.0 if state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_PARTIAL) else None
        self._events.emit(
            job, pb.STAGE_COMPLETE, 100.0, message, overall=overall, eta=0.0, error=error, final=True
        )
        # Only after the last event: a crash before it resumes the job from its stages.
        self._files.remove_scratch(job.job_id)
        self._store.forget_stages(job.job_id)
