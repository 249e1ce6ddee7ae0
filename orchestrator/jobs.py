"""Job state and the pipeline: runs separation -> transcription -> karaoke for each job, turns
every stage update into a stored ProgressEvent at once, and lets any number of watchers follow a
job from any seq. Jobs survive an orchestrator restart: unfinished ones resume after the last
stage that completed."""

from __future__ import annotations

import asyncio
import logging
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import BinaryIO

from google.protobuf.timestamp_pb2 import Timestamp

from orchestrator.progress import HISTORY_RUNS, JobProgress, LearnedSpeeds, StageTime, work_kinds
from orchestrator.stages import StageClients, StageFailed
from orchestrator.store import TERMINAL_STATES, Store
from orchestrator.uploads import Uploads
from roar.audio import content_type, format_name
from roar.catalog import separation_catalog, transcription_catalog
from roar.config import Settings
from roar.errors import (
    BadInput,
    DiskFull,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    internal_message,
    is_disk_full,
)
from roar.text import LANGUAGE_RULE, is_language_code
from roar.v1 import common_pb2, karaoke_pb2, separation_pb2, transcription_pb2
from roar.v1 import orchestrator_pb2 as pb

log = logging.getLogger("roar.orchestrator")

STAGE_NAMES = {
    pb.STAGE_SEPARATION: "separation",
    pb.STAGE_TRANSCRIPTION: "transcription",
    pb.STAGE_KARAOKE: "karaoke",
}
TRANSCRIPT_FILE = ".transcript.pb"
MAX_LYRICS_CHARS = 100_000
# ListJobs pages: the page size when none is asked, the most jobs one page holds, and the most
# bytes (a page is cut short before a job would pass it, far under gRPC's 4 MB default).
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_PAGE_BYTES = 1024 * 1024
# A page_token is an offset into the listing: a decimal number of at most this many digits.
MAX_PAGE_TOKEN_DIGITS = 9
# Progress updates closer together than this, with the same message, are merged.
MIN_EVENT_INTERVAL = 0.25


def artifact_kind(name: str) -> str:
    if name.startswith("instrumental."):
        return "instrumental"
    if name.startswith("lyrics."):
        return "lyrics"
    if name.endswith(".json"):
        return "words"
    return "stem"


def _now() -> Timestamp:
    stamp = Timestamp()
    stamp.GetCurrentTime()
    return stamp


class Jobs:
    def __init__(self, settings: Settings, store: Store, uploads: Uploads, clients: StageClients) -> None:
        self._settings = settings
        self._store = store
        self._uploads = uploads
        self._clients = clients
        self._dir = settings.data_dir / "jobs"
        self._slots = asyncio.Semaphore(settings.max_running_jobs)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancelling: set[str] = set()
        self._signals: dict[str, asyncio.Event] = {}
        # The models jobs may name: the same catalogs the stages build from the same settings.
        self.separation_models = separation_catalog(settings)
        self.transcription_models = transcription_catalog(settings)

    @property
    def directory(self) -> Path:
        """Where each job keeps its files, in a folder named by its id."""
        return self._dir

    # Queries.

    def get(self, job_id: str) -> pb.Job:
        job = self._store.get_job(job_id) if job_id else None
        if job is None:
            raise NotFound(f"no job {job_id!r}")
        return job

    def list(self, page_size: int, page_token: str, owner: str | None = None) -> pb.ListJobsResponse:
        """A page of jobs, newest first (everyone's, or only `owner`'s): at most page_size jobs (0:
        DEFAULT_PAGE_SIZE, more than MAX_PAGE_SIZE: that many) and at most MAX_PAGE_BYTES, whatever
        the jobs hold."""
        if page_size < 0:
            raise BadInput("page_size must be 0 (the default) or more")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        if page_token and not (page_token.isdecimal() and len(page_token) <= MAX_PAGE_TOKEN_DIGITS):
            raise BadInput("page_token is not a next_page_token of this server")
        offset = int(page_token or 0)
        jobs = self._store.list_jobs(size + 1, offset, owner)
        response = pb.ListJobsResponse()
        page_bytes = 0
        for job in jobs[:size]:
            page_bytes += job.ByteSize()
            if response.jobs and page_bytes > MAX_PAGE_BYTES:
                break
            response.jobs.append(job)
        if len(jobs) > len(response.jobs):
            response.next_page_token = str(offset + len(response.jobs))
        return response

    def open_artifact(self, job_id: str, name: str) -> BinaryIO:
        """One artifact of a job, opened for reading. NOT_FOUND (never a server path) when the
        job has no such artifact, when its files were deleted after ROAR_RETENTION_DAYS, or
        when the file is missing on disk."""
        job = self.get(job_id)
        if self._store.files_deleted(job_id):
            raise NotFound(
                f"the files of job {job_id} expired: they are deleted "
                f"{self._settings.retention_days:g} days after the job ends (ROAR_RETENTION_DAYS)"
            )
        if name not in {a.name for a in job.artifacts}:
            raise NotFound(f"job {job_id} has no artifact {name!r}")
        try:
            return (self._dir / job_id / name).open("rb")
        except FileNotFoundError as exc:
            raise NotFound(f"the artifact {name!r} of job {job_id} is missing on the server") from exc

    async def watch(self, job_id: str, after_seq: int) -> AsyncIterator[pb.ProgressEvent]:
        """Every event after `after_seq`, then live ones until the job's last event."""
        self.get(job_id)
        while True:
            # Take the signal before reading, so an event stored after the read still wakes us.
            signal = self._signals.setdefault(job_id, asyncio.Event())
            events = self._store.events_after(job_id, after_seq)
            for event in events:
                yield event
                after_seq = event.seq
                if event.state in TERMINAL_STATES:
                    return
            if not events:
                if self.get(job_id).state in TERMINAL_STATES:
                    return
                await signal.wait()

    # Commands.

    def submit(self, upload_id: str, options: pb.JobOptions, owner: str = "") -> pb.Job:
        upload = self._uploads.get(upload_id)
        if not upload.finished:
            raise FailedPrecondition("the upload is not finished: call FinishUpload first")
        self._check_options(options)
        limit = self._settings.max_running_jobs + self._settings.max_queued_jobs
        if len(self._tasks) >= limit:
            raise ResourceExhausted(f"{len(self._tasks)} jobs are running or queued; try again later")
        now = _now()
        job = pb.Job(
            job_id=uuid.uuid4().hex,
            state=pb.JOB_STATE_QUEUED,
            filename=upload.filename,
            options=options,
            audio=upload.audio,
            created=now,
            updated=now,
        )
        self._store.put_job(upload_id, job, owner)
        minutes, seconds = divmod(int(upload.audio.duration_seconds), 60)
        self._emit(
            job,
            pb.STAGE_UPLOAD,
            100.0,
            f"received {upload.filename} ({upload.size / 1e6:.1f} MB, {minutes}:{seconds:02d})",
        )
        self._start(job, resumed=False)
        return job

    def _check_options(self, options: pb.JobOptions) -> None:
        """Refuses, before a job exists, every option that would only fail in a stage."""
        limit = self._settings.job_timeout_seconds
        if not (math.isfinite(options.timeout_seconds) and 0 <= options.timeout_seconds <= limit):
            raise BadInput(
                f"timeout_seconds must be 0 (the server's limit) or a number of seconds up to "
                f"{limit} (ROAR_JOB_TIMEOUT)"
            )
        if len(options.lyrics) > MAX_LYRICS_CHARS:
            raise BadInput(f"lyrics are limited to {MAX_LYRICS_CHARS} characters")
        if not is_language_code(options.language):
            raise BadInput(LANGUAGE_RULE)
        format_name(options.audio_format)  # raises BadInput when unknown
        known = set(common_pb2.LyricsFormat.values()) - {common_pb2.LYRICS_FORMAT_UNSPECIFIED}
        if any(f not in known for f in options.lyrics_formats):
            names = ", ".join(common_pb2.LyricsFormat.Name(f) for f in sorted(known))
            raise BadInput(f"unknown lyrics format in lyrics_formats; use {names} (none: all)")
        # Only offered names (each raises BadInput otherwise).
        self.separation_models.name_for(options.separation_model)
        self.transcription_models.name_for(options.transcription_model)

    def cancel(self, job_id: str) -> pb.Job:
        job = self.get(job_id)
        task = self._tasks.get(job_id)
        if job.state not in TERMINAL_STATES and task is not None:
            self._cancelling.add(job_id)
            task.cancel()
        return job

    def resume_unfinished(self) -> None:
        for job in self._store.unfinished_jobs():
            if self._store.reconcile(job):
                log.warning(
                    "job %s: its row lagged its events; brought up to seq %d", job.job_id, job.last_event.seq
                )
            if job.state in TERMINAL_STATES:
                continue  # its final event was stored: it finished
            log.info("resuming job %s", job.job_id)
            self._start(job, resumed=True)

    async def shutdown(self) -> None:
        """Stops the running jobs without marking them: the next start resumes them."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # The pipeline.

    def _start(self, job: pb.Job, resumed: bool) -> None:
        task = asyncio.create_task(self._run(job, resumed))
        self._tasks[job.job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.job_id, None))

    def _emit(
        self,
        job: pb.Job,
        stage: int,
        stage_percent: float,
        message: str,
        *,
        overall: float | None = None,
        eta: float | None = None,
        error: pb.Error | None = None,
        final: bool = False,
    ) -> pb.ProgressEvent:
        event = pb.ProgressEvent(
            job_id=job.job_id,
            stage=stage,
            stage_percent=stage_percent,
            overall_percent=job.last_event.overall_percent if overall is None else overall,
            message=message,
            timestamp=_now(),
            state=job.state,
        )
        if eta is not None:
            event.eta_seconds = eta
        if error is not None:
            event.error.CopyFrom(error)
        if final:
            event.artifacts.extend(job.artifacts)
            event.errors.extend(job.errors)
        self._store.record(event, job)
        signal = self._signals.pop(job.job_id, None)
        if signal is not None:
            signal.set()
        return event

    def _finish(self, job: pb.Job, state: int, message: str) -> None:
        job.state = state
        del job.artifacts[:]
        job.artifacts.extend(self._artifacts(job.job_id))
        error = job.errors[0] if job.errors and state != pb.JOB_STATE_SUCCEEDED else None
        if state == pb.JOB_STATE_PARTIAL:
            error = None  # the COMPLETE event lists what failed in `errors`
        overall = 100.0 if state in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_PARTIAL) else None
        self._emit(job, pb.STAGE_COMPLETE, 100.0, message, overall=overall, eta=0.0, error=error, final=True)

    def _artifacts(self, job_id: str) -> list[pb.Artifact]:
        job_dir = self._dir / job_id
        if not job_dir.is_dir():
            return []
        return [
            pb.Artifact(
                name=p.name,
                kind=artifact_kind(p.name),
                size=p.stat().st_size,
                content_type=content_type(p.name),
            )
            for p in sorted(job_dir.iterdir())
            if p.is_file() and not p.name.startswith(".")
        ]

    async def _run(self, job: pb.Job, resumed: bool) -> None:
        try:
            if self._slots.locked():
                self._emit(job, pb.STAGE_UPLOAD, 100.0, "queued: waiting for a free worker")
            async with self._slots:
                job.state = pb.JOB_STATE_RUNNING
                if resumed:
                    self._emit(
                        job, job.last_event.stage, job.last_event.stage_percent, "resuming after a restart"
                    )
                await self._pipeline(job)
        except asyncio.CancelledError:
            if job.job_id not in self._cancelling:
                raise  # the server is stopping: the job resumes at the next start
            self._cancelling.discard(job.job_id)
            job.errors.add(code="CANCELLED", message="cancelled by the user", stage=job.last_event.stage)
            self._finish(job, pb.JOB_STATE_CANCELLED, "cancelled")
        except Exception as exc:  # never leave a job hanging: report what broke
            log.exception("job %s failed", job.job_id)
            message = internal_message(exc)
            job.errors.add(code="INTERNAL", message=message, stage=job.last_event.stage)
            self._finish(job, pb.JOB_STATE_FAILED, f"failed: {message}")

    async def _pipeline(self, job: pb.Job) -> None:
        job_dir = self._dir / job.job_id
        job_dir.mkdir(parents=True, exist_ok=True)
        options = job.options
        ext = format_name(options.audio_format)
        duration = job.audio.duration_seconds
        speeds = LearnedSpeeds(StageTime._make(row) for row in self._store.stage_runs())
        progress = JobProgress(duration, work_kinds(options), speeds, shown=job.last_event.overall_percent)
        timeout = options.timeout_seconds or self._settings.job_timeout_seconds
        deadline = job.created.ToSeconds() + timeout

        async def run_stage(stage: int, call: Callable[[Callable], Awaitable[object]]) -> object | None:
            """Runs one stage with live progress; on failure records the error and returns None."""
            done_marker = job_dir / f".done-{STAGE_NAMES[stage]}"
            if done_marker.exists():
                progress.skip(stage)
                return True
            progress.start(stage)
            self._emit(
                job,
                stage,
                0.0,
                f"{STAGE_NAMES[stage]} starting",
                overall=progress.overall(),
                eta=progress.eta(),
            )
            last = {"time": 0.0, "percent": -1.0, "message": ""}

            async def on_progress(update: common_pb2.StageProgress) -> None:
                progress.update(stage, update.percent)
                now = time.monotonic()
                if (
                    update.message == last["message"]
                    and now - last["time"] < MIN_EVENT_INTERVAL
                    and update.percent < 100.0
                ):
                    return
                last.update(time=now, percent=update.percent, message=update.message)
                self._emit(
                    job, stage, update.percent, update.message, overall=progress.overall(), eta=progress.eta()
                )

            remaining = deadline - time.time()
            try:
                if remaining <= 0:
                    raise StageFailed("DEADLINE_EXCEEDED", "the job ran past its time limit")
                result = await call(on_progress, remaining)
            except StageFailed as exc:
                error = job.errors.add(code=exc.code, message=exc.message, stage=stage)
                progress.skip(stage)
                self._emit(
                    job,
                    stage,
                    last["percent"] if last["percent"] >= 0 else 0.0,
                    f"{STAGE_NAMES[stage]} failed: {exc.message}",
                    error=error,
                )
                return None
            run = progress.finish(stage)
            self._store.add_stage_run(*run, keep=HISTORY_RUNS)
            done_marker.touch()
            # A finished stage's event carries no ETA: nothing is left of it.
            message = f"{STAGE_NAMES[stage]} done in {run.seconds:.1f} s"
            self._emit(job, stage, 100.0, message, overall=progress.overall())
            return result

        song = await asyncio.to_thread(self._uploads.audio_path(self._store.upload_of(job.job_id)).read_bytes)

        async def separate(on_progress, timeout: float) -> bool:
            request = separation_pb2.SeparationOptions(
                model=options.separation_model, all_stems=options.all_stems, format=options.audio_format
            )
            stems, _ = await self._clients.separate(song, request, on_progress, timeout)
            await asyncio.to_thread(_write_files, job_dir, stems)
            return True

        if await run_stage(pb.STAGE_SEPARATION, separate) is None:
            self._finish(job, pb.JOB_STATE_FAILED, "failed: separation did not complete")
            return

        async def transcribe(on_progress, timeout: float) -> bool:
            vocals = await asyncio.to_thread((job_dir / f"vocals.{ext}").read_bytes)
            request = transcription_pb2.TranscriptionOptions(
                model=options.transcription_model, language=options.language, lyrics=options.lyrics
            )
            transcript = await self._clients.transcribe(vocals, request, on_progress, timeout)
            await asyncio.to_thread(_write_file, job_dir, TRANSCRIPT_FILE, transcript.SerializeToString())
            return True

        async def build_karaoke(on_progress, timeout: float) -> bool:
            transcript = common_pb2.Transcript.FromString((job_dir / TRANSCRIPT_FILE).read_bytes())
            instrumental = await asyncio.to_thread((job_dir / f"instrumental.{ext}").read_bytes)
            request = karaoke_pb2.KaraokeOptions(
                transcript=transcript,
                formats=options.lyrics_formats,
                instrumental_format=options.audio_format,
                title=Path(job.filename).stem,
            )
            files = await self._clients.build_karaoke(instrumental, request, on_progress, timeout)
            await asyncio.to_thread(_write_files, job_dir, files)
            return True

        if await run_stage(pb.STAGE_TRANSCRIPTION, transcribe) is None:
            progress.skip(pb.STAGE_KARAOKE)
            self._emit(job, pb.STAGE_KARAOKE, 0.0, "karaoke skipped: no transcript")
        else:
            await run_stage(pb.STAGE_KARAOKE, build_karaoke)

        if job.errors:
            failed = ", ".join(STAGE_NAMES[e.stage] for e in job.errors)
            self._finish(job, pb.JOB_STATE_PARTIAL, f"done, but {failed} failed")
        else:
            self._finish(job, pb.JOB_STATE_SUCCEEDED, "done")


def _write_files(directory: Path, files: dict[str, bytes]) -> None:
    """Stores a stage's files under their own names (never hidden ones, never elsewhere)."""
    for name, data in files.items():
        safe = Path(name).name
        if not safe or safe.startswith("."):
            raise StageFailed("INTERNAL", f"a stage sent a file with a bad name: {name!r}")
        _write_file(directory, safe, data)


def _write_file(directory: Path, name: str, data: bytes) -> None:
    """Writes a job's file whole or not at all; a full disk fails the stage with RESOURCE_EXHAUSTED."""
    temporary = directory / f".{name}.part"
    try:
        temporary.write_bytes(data)
        temporary.replace(directory / name)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        if is_disk_full(exc):
            raise StageFailed(DiskFull.code, DiskFull(name).message) from exc
        raise
