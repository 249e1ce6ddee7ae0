"""The pipeline: a table of stages (separation -> transcription -> karaoke), each an object that
names what it reads and what it writes, run in order for a job, except that transcription runs
alongside separation: it starts once the first window of vocals is committed and streams them as
they come (overlap). Which stages finished (with their small outputs) and the stages' checkpoints
(windows, passages) live in the store, so a resumed job goes on from the stages, the window and
the passage, that were running."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.artifacts import PCM_DTYPE, ChunkFiles, JobFiles, StemCheckpoints
from orchestrator.checkpoints import VOCALS, Passages, StemWindows, VocalsFeed
from orchestrator.events import MIN_EVENT_INTERVAL, Events
from orchestrator.progress import HISTORY_RUNS, JobProgress, LearnedSpeeds, StageTime, work_kinds
from orchestrator.stages import OnProgress, StageClients, StageFailed
from orchestrator.store import Store
from roar import metrics
from roar.audio import format_name
from roar.config import Settings
from roar.service import file_request_stream
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
    speeds learned from recent stage runs of the same kind, the running stages' percents, overall
    percent and ETA; each finished stage run is stored for the jobs to come."""

    def __init__(self, store: Store, job: pb.Job) -> None:
        self._store = store
        speeds = LearnedSpeeds(StageTime._make(row) for row in store.stage_runs())
        self._progress = JobProgress(
            job.audio.duration_seconds, work_kinds(job.options), speeds, shown=job.last_event.overall_percent
        )

    def start(self, stage: int) -> None:
        self._progress.start(stage)

    def update(self, stage: int, percent: float) -> None:
        self._progress.update(stage, percent)

    def skip(self, stage: int) -> None:
        self._progress.skip(stage)

    def finish(self, stage: int) -> float:
        """Marks the stage done and stores its run; returns how long it took."""
        run = self._progress.finish(stage)
        self._store.add_stage_run(*run, keep=HISTORY_RUNS)
        metrics.stage_completed(STAGE_NAMES[stage], run.seconds, run.audio_seconds)
        return run.seconds

    def overall(self) -> float:
        return self._progress.overall()

    def eta(self) -> float:
        return self._progress.eta()


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
    vocals: VocalsFeed  # separation's vocals as they are committed, for transcription


class StageReporter:
    """Turns a stage's progress updates into job events (merging quick repeats of one message)."""

    def __init__(self, run: JobRun, stage: int, share: Callable[[], float] | None = None) -> None:
        """`share`: the part of the song the stage has been given so far (a stage that streams
        from another reports its percent of what it has received)."""
        self._run = run
        self._stage = stage
        self._share = share
        self._time = 0.0
        self._message = ""
        self.percent = 0.0

    async def __call__(self, update: common_pb2.StageProgress) -> None:
        percent = update.percent if self._share is None else update.percent * self._share()
        self._run.pace.update(self._stage, percent)  # every update counts for the rate
        now = time.monotonic()
        if update.message == self._message and now - self._time < MIN_EVENT_INTERVAL and percent < 100.0:
            return
        self._time, self._message, self.percent = now, update.message, percent
        self._emit(percent, update.message)

    def say(self, percent: float, message: str) -> None:
        """An update of the orchestrator's own (a resumed stage's starting point)."""
        self._run.pace.update(self._stage, percent)
        self._emit(percent, message)

    def _emit(self, percent: float, message: str) -> None:
        pace = self._run.pace
        self._run.events.emit(
            self._run.job, self._stage, percent, message, overall=pace.overall(), eta=pace.eta()
        )


class Separate:
    """Reads the song; writes vocals.<ext>, instrumental.<ext> (and every stem with all_stems),
    encoded from the checkpoint files the windows went to, and commits the vocals to run.vocals as
    they come. Its output is the windows' layout (the vocals' checkpoint file stays for
    transcription until the job ends)."""

    stage = pb.STAGE_SEPARATION
    needs: tuple[int, ...] = ()
    streams_from: int | None = None
    required = True  # without stems the job fails

    async def ready(self, run: JobRun) -> None:
        return None

    async def run(self, run: JobRun, report: StageReporter, timeout: float) -> bytes | None:
        options = run.job.options
        windows = StemWindows(run.store, run.job.job_id, run.directory, run.vocals)
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
        windows.drop_other_stems()
        assert windows.layout is not None
        return windows.layout.SerializeToString()


class Transcribe:
    """Reads the vocals as separation commits them (raw PCM from their checkpoint file; the
    encoded vocals.<ext> for a job whose separation an older orchestrator finished); writes the
    transcript (kept in the store), each passage committed as it comes."""

    stage = pb.STAGE_TRANSCRIPTION
    needs: tuple[int, ...] = ()
    streams_from: int | None = pb.STAGE_SEPARATION
    required = False

    async def ready(self, run: JobRun) -> None:
        """Returns once there are vocals to stream: separation's first window, or all of them when
        an earlier run of the job finished separating."""
        done = run.store.stages_done(run.job.job_id)
        if pb.STAGE_SEPARATION not in done:
            await run.vocals.wait_for_samples()
            return
        if done[pb.STAGE_SEPARATION]:
            layout = separation_pb2.SeparationResult.FromString(done[pb.STAGE_SEPARATION])
            raw = StemCheckpoints(run.directory, [VOCALS], layout.channels).path(VOCALS)
            if raw.exists() and raw.stat().st_size >= layout.frames * layout.channels * PCM_DTYPE.itemsize:
                run.vocals.commit(raw, layout, layout.frames)

    async def run(self, run: JobRun, report: StageReporter, timeout: float) -> bytes | None:
        options = run.job.options
        request = transcription_pb2.TranscriptionOptions(
            model=options.transcription_model, language=options.language, lyrics=options.lyrics
        )
        vocals: VocalsFeed | EncodedVocals = run.vocals
        if run.vocals.layout is not None:
            request.pcm.CopyFrom(run.vocals.pcm_layout())
        else:
            vocals = EncodedVocals(run.directory / f"{VOCALS}.{run.ext}")
        passages = Passages(run.store, run.job.job_id)
        if passages.done:
            report.say(0.0, f"transcription resuming after passage {len(passages.done)}")
        await run.clients.transcribe(vocals, request, passages, report, timeout)
        if passages.transcript is None:
            raise StageFailed("INTERNAL", "the transcription service sent no transcript")
        return passages.transcript.SerializeToString()


class EncodedVocals:
    """The vocals' file as a Transcribe request stream (options.pcm unset)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def requests(
        self, options: transcription_pb2.TranscriptionOptions
    ) -> AsyncIterator[transcription_pb2.TranscribeRequest]:
        return file_request_stream(transcription_pb2.TranscribeRequest, options, "audio", self._path)


class BuildKaraoke:
    """Reads the transcript and the song's duration; writes the lyric files, and with
    karaoke_video karaoke.mp4 over the instrumental (separation wrote it before this stage
    starts). A failed video alone leaves the lyric files and makes the job PARTIAL."""

    stage = pb.STAGE_KARAOKE
    needs = (pb.STAGE_TRANSCRIPTION,)
    streams_from: int | None = None
    required = False

    async def ready(self, run: JobRun) -> None:
        return None

    async def run(self, run: JobRun, report: StageReporter, timeout: float) -> bytes | None:
        job = run.job
        deadline = time.monotonic() + timeout
        transcript = common_pb2.Transcript.FromString(
            run.store.stages_done(job.job_id)[pb.STAGE_TRANSCRIPTION] or b""
        )
        request = karaoke_pb2.KaraokeOptions(
            transcript=transcript,
            formats=job.options.lyrics_formats,
            title=Path(job.filename).stem,
            duration_seconds=job.audio.duration_seconds,
        )
        video = job.options.karaoke_video
        lyrics_share = LYRICS_SHARE_WITH_VIDEO if video else 100.0
        await _receive_files(
            run,
            lambda receiver, progress: run.clients.build_karaoke(
                request, receiver, progress, deadline - time.monotonic()
            ),
            _scaled(report, 0.0, lyrics_share),
        )
        if video:
            await self._video(run, request, _scaled(report, lyrics_share, 100.0), report, deadline)
        return None

    async def _video(
        self,
        run: JobRun,
        lyrics: karaoke_pb2.KaraokeOptions,
        progress: OnProgress,
        report: StageReporter,
        deadline: float,
    ) -> None:
        """karaoke.mp4; a failure is recorded as the job's error and leaves the stage done."""
        job = run.job
        instrumental = run.directory / f"instrumental.{run.ext}"
        options = karaoke_pb2.VideoOptions(karaoke=lyrics)
        try:
            if not instrumental.is_file():
                raise StageFailed("INTERNAL", "the instrumental the video is made from is missing")
            await _receive_files(
                run,
                lambda receiver, on_progress: run.clients.render_video(
                    options, instrumental, receiver, on_progress, deadline - time.monotonic()
                ),
                progress,
            )
        except StageFailed as exc:
            message = f"karaoke video failed: {exc.message}"
            error = job.errors.add(code=exc.code, message=message, stage=self.stage)
            run.events.emit(job, self.stage, report.percent, message, error=error)


# With karaoke_video, the lyric files take this part of the karaoke stage's percent, the video the rest.
LYRICS_SHARE_WITH_VIDEO = 5.0


def _scaled(report: StageReporter, start: float, end: float) -> OnProgress:
    """A stage call's 0-100 percent as [start, end] of the stage's."""

    async def scaled(update: common_pb2.StageProgress) -> None:
        percent = start + (end - start) * min(max(update.percent, 0.0), 100.0) / 100.0
        await report(common_pb2.StageProgress(percent=percent, message=update.message))

    return scaled


async def _receive_files(
    run: JobRun, call: Callable[[_FileReceiver, OnProgress], Awaitable[None]], progress: OnProgress
) -> None:
    """Makes a stage call whose FileChunks become the job's files once it has ended well."""
    files = ChunkFiles(run.directory)
    try:
        await call(_FileReceiver(files), progress)
    except BaseException:
        files.discard()
        raise
    files.commit()


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
STAGE_OF = {stage.stage: stage for stage in STAGES}


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
        """Runs the job's stages that are not done yet, then finishes the job. A stage starts once
        the stages before it ended, or alongside the one it streams from."""
        run = JobRun(
            job=job,
            song=song,
            directory=self._files.make(job.job_id),
            ext=format_name(job.options.audio_format),
            store=self._store,
            clients=self._clients,
            events=self._events,
            pace=Pace(self._store, job),
            vocals=VocalsFeed(),
        )
        timeout = job.options.timeout_seconds or self._settings.job_timeout_seconds
        # From the job's creation, or its last resume or retry: time paused or ended does not count.
        deadline = (self._store.clock_start(job.job_id) or job.created.ToSeconds()) + timeout
        running: dict[int, asyncio.Task[bool]] = {}
        try:
            for stage in STAGES:
                if stage.streams_from not in running and not await self._settle(run, running):
                    return
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
                running[stage.stage] = asyncio.create_task(self._run_stage(run, stage, deadline))
            if not await self._settle(run, running):
                return
        finally:
            for task in running.values():  # the job was cancelled or broke: so are its stages
                task.cancel()
            await asyncio.gather(*running.values(), return_exceptions=True)
        if job.errors:
            failed = ", ".join(STAGE_NAMES[e.stage] for e in job.errors)
            self.finish(job, pb.JOB_STATE_PARTIAL, f"done, but {failed} failed")
        else:
            self.finish(job, pb.JOB_STATE_SUCCEEDED, "done")

    async def _settle(self, run: JobRun, running: dict[int, asyncio.Task[bool]]) -> bool:
        """Waits for the running stages to end. When a required one fails, the others are
        cancelled (transcription cannot go on without the rest of the vocals), the job fails and
        this returns False."""
        while running:
            ended, _ = await asyncio.wait(running.values(), return_when=asyncio.FIRST_COMPLETED)
            for stage, task in list(running.items()):
                if task not in ended:
                    continue
                del running[stage]
                if not task.result() and STAGE_OF[stage].required:
                    for other in running.values():
                        other.cancel()
                    await asyncio.gather(*running.values(), return_exceptions=True)
                    running.clear()
                    self.finish(
                        run.job, pb.JOB_STATE_FAILED, f"failed: {STAGE_NAMES[stage]} did not complete"
                    )
                    return False
        return True

    async def _run_stage(self, run: JobRun, stage: Stage, deadline: float) -> bool:
        """Runs one stage, once its input is ready, with live progress and records it done; on
        failure records the error and returns False."""
        job, name = run.job, STAGE_NAMES[stage.stage]
        await stage.ready(run)
        run.pace.start(stage.stage)
        self._events.emit(
            job, stage.stage, 0.0, f"{name} starting", overall=run.pace.overall(), eta=run.pace.eta()
        )
        report = StageReporter(run, stage.stage, run.vocals.share if stage.streams_from is not None else None)
        # How the run ended, for GetStats and /metrics; None when it was cancelled (the job was, or
        # the server is stopping and resumes it later): that says nothing about the stage.
        started, code = time.time(), None
        try:
            remaining = deadline - started
            if remaining <= 0:
                raise StageFailed("DEADLINE_EXCEEDED", "the job ran past its time limit")
            output = await stage.run(run, report, remaining)
            code = metrics.OK
        except StageFailed as exc:
            code = exc.code
            error = job.errors.add(code=exc.code, message=exc.message, stage=stage.stage)
            run.pace.skip(stage.stage)
            self._events.emit(job, stage.stage, report.percent, f"{name} failed: {exc.message}", error=error)
            return False
        finally:
            if code is not None:
                ended = time.time()
                metrics.STAGE_RESULTS.labels(name, code).inc()
                self._store.add_stage_result(
                    job.job_id, stage.stage, code, ended - started, job.audio.duration_seconds, ended
                )
        self._store.finish_stage(job.job_id, stage.stage, output)
        elapsed = run.pace.finish(stage.stage)
        self._events.emit(
            job,
            stage.stage,
            100.0,
            f"{name} done in {elapsed:.1f} s",
            overall=run.pace.overall(),  # no ETA on a finished stage
        )
        return True

    def finish(self, job: pb.Job, state: int, message: str, error: pb.JobError | None = None) -> None:
        """The job's last event, with its files; what only an unfinished job needs is dropped. A
        job that did not succeed shows `error`, or else the last error it had (several stages may
        fail at once)."""
        job.state = state
        del job.artifacts[:]
        job.artifacts.extend(self._files.artifacts(job.job_id))
        if error is None and job.errors and state != pb.JOB_STATE_SUCCEEDED:
            error = job.errors[-1]
        if state == pb.JOB_STATE_PARTIAL:
            error = None  # the COMPLETE event lists what failed in `errors`
        overall = 100.0 if state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_PARTIAL) else None
        self._events.emit(
            job, pb.STAGE_COMPLETE, 100.0, message, overall=overall, eta=0.0, error=error, final=True
        )
        metrics.job_ended(pb.JobState.Name(state), time.time() - job.created.ToNanoseconds() / 1e9)
        # Only after the last event: a crash before it resumes the job from its stages.
        self._files.remove_scratch(job.job_id)
        if state == pb.JOB_STATE_SUCCEEDED:
            self._store.forget_stages(job.job_id)
        else:  # RetryJob reruns only the stages that did not succeed
            self._store.forget_checkpoints(job.job_id)
