"""Jobs: submitting, listing, cancelling, following and downloading them. Each job runs the
pipeline (orchestrator/pipeline.py) in its own task, at most max_running_jobs at once and
max_queued_jobs waiting; jobs survive an orchestrator restart: unfinished ones resume from the
stage, and the checkpoint, they had reached.

On a shared (PostgreSQL) store several orchestrators run jobs: each job is run by the one holding
its lease (taken when the job is submitted or taken over, renewed every third of
ROAR_LEASE_SECONDS, dropped when the job ends or the orchestrator stops). Every orchestrator
looks as often for unfinished jobs whose lease expired (their orchestrator died) and resumes
them, the way a restarted orchestrator resumes its own. A cancel or a pause asked through an
orchestrator that does not run the job is recorded in the store and announced to the one that
does (or carried out by the one that next takes the job).

A paused job holds no worker and no lease: it is stopped the way shutdown stops a job (its stages
go on from their checkpoints), stays PAUSED through restarts, and runs again after ResumeJob. A
retried job (RetryJob: FAILED, PARTIAL, CANCELLED) keeps the stages that succeeded and reruns the
others; its events go on after its last one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import uuid
from collections.abc import AsyncIterator, Generator
from pathlib import Path

from orchestrator.artifacts import JobFiles, read_range
from orchestrator.events import Events, now
from orchestrator.pipeline import STAGE_NAMES, Pipeline
from orchestrator.progress import LearnedSpeeds, StageTime
from orchestrator.stages import StageClients
from orchestrator.store import (
    CANCELS_CHANNEL,
    EVENTS_CHANNEL,
    PAUSES_CHANNEL,
    TERMINAL_STATES,
    Store,
    listen,
)
from orchestrator.uploads import Uploads
from roar import metrics
from roar.audio import format_name
from roar.catalog import separation_catalog, transcription_catalog
from roar.config import Settings
from roar.errors import BadInput, FailedPrecondition, NotFound, ResourceExhausted, internal_message
from roar.text import LANGUAGE_RULE, is_language_code
from roar.v1 import common_pb2
from roar.v1 import orchestrator_pb2 as pb

log = logging.getLogger("roar.orchestrator")

MAX_LYRICS_CHARS = 100_000
# ListJobs pages: the page size when none is asked, the most jobs one page holds, and the most
# bytes (a page is cut short before a job would pass it, far under gRPC's 4 MB default).
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
MAX_PAGE_BYTES = 1024 * 1024
# A page_token is an offset into the listing: a decimal number of at most this many digits.
MAX_PAGE_TOKEN_DIGITS = 9
# The first event of a resumed job: after this orchestrator restarted, or taken over from another
# one that stopped (a shared store).
RESTARTED_NOTE = "resuming after a restart"
TAKEN_OVER_NOTE = "resuming: taken over from an orchestrator that stopped"
# The first running event of a job resumed after a pause, and of a retried one.
RESUMED_NOTE = "resumed: going on from where it was paused"
RETRIED_NOTE = "retrying the stages that did not succeed"
# The states RetryJob reruns.
RETRYABLE_STATES = frozenset({pb.JOB_STATE_FAILED, pb.JOB_STATE_PARTIAL, pb.JOB_STATE_CANCELLED})
# How long PauseJob waits for the orchestrator running the job (a shared store) to pause it.
REMOTE_PAUSE_WAIT_SECONDS = 10.0


def paused_message(job_id: str) -> str:
    """The paused event's message: how to go on."""
    return f"paused: roar resume {job_id} goes on from here"


def state_name(state: int) -> str:
    """'failed', 'running', ...: a JobState as messages say it."""
    return pb.JobState.Name(state).removeprefix("JOB_STATE_").lower()


class Jobs:
    def __init__(self, settings: Settings, store: Store, uploads: Uploads, clients: StageClients) -> None:
        self._settings = settings
        self._store = store
        self._uploads = uploads
        self._files = JobFiles(settings.data_dir / "jobs")
        self._events = Events(store)
        self._pipeline = Pipeline(settings, store, self._files, clients, self._events)
        self._slots = asyncio.Semaphore(settings.max_running_jobs)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._cancelling: set[str] = set()
        self._pausing: set[str] = set()
        # The jobs waiting for a slot, first in line first, and the place each was last told;
        # the jobs holding a slot. On a shared (PostgreSQL) store each orchestrator queues the
        # jobs it holds the lease of: a place in line is within this orchestrator's queue.
        self._queue: list[pb.Job] = []
        self._places: dict[str, int] = {}
        self._running: dict[str, pb.Job] = {}
        self._stopping = False
        # Who holds this orchestrator's leases: the same after a restart on the same host and
        # port, so a restarted orchestrator takes its own jobs back at once.
        self._lease_owner = f"{socket.gethostname()}:{settings.orchestrator_port}"
        # The models jobs may name: the same catalogs the stages build from the same settings.
        self.separation_models = separation_catalog(settings)
        self.transcription_models = transcription_catalog(settings)

    @property
    def directory(self) -> Path:
        """Where each job keeps its files, in a folder named by its id."""
        return self._files.root

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

    def artifacts(self, job_id: str) -> list[pb.Artifact]:
        """The files a job has to download. NOT_FOUND when they were deleted after
        ROAR_RETENTION_DAYS."""
        job = self.get(job_id)
        if self._store.files_deleted(job_id):
            raise NotFound(
                f"the files of job {job_id} expired: they are deleted "
                f"{self._settings.retention_days:g} days after the job ends (ROAR_RETENTION_DAYS)"
            )
        return list(job.artifacts)

    def artifact(self, job_id: str, name: str) -> pb.Artifact:
        """One file of a job, by name; NOT_FOUND as artifacts(), and when the job has no such file."""
        for artifact in self.artifacts(job_id):
            if artifact.name == name:
                return artifact
        raise NotFound(f"job {job_id} has no artifact {name!r}")

    def download(self, job_id: str, name: str, offset: int) -> Generator[pb.DownloadChunk, None, None]:
        """One artifact of a job from `offset`, in chunks. NOT_FOUND (never a server path) as
        artifact(), and when the file is missing on disk; OUT_OF_RANGE for an offset past its end."""
        self.artifact(job_id, name)
        with self._files.open(job_id, name) as file:
            yield from read_range(file, offset)

    def watch(self, job_id: str, after_seq: int) -> AsyncIterator[pb.ProgressEvent]:
        """Every event after `after_seq`, then live ones until the job's last event."""
        self.get(job_id)
        return self._events.watch(job_id, after_seq)

    # Commands.

    def submit(self, upload_id: str, options: pb.JobOptions, owner: str = "") -> pb.Job:
        upload = self._uploads.get(upload_id)
        if not upload.finished:
            raise FailedPrecondition("the upload is not finished: call FinishUpload first")
        self._check_options(options)
        self._check_room()
        created = now()
        job = pb.Job(
            job_id=uuid.uuid4().hex,
            state=pb.JOB_STATE_QUEUED,
            filename=upload.filename,
            options=options,
            audio=upload.audio,
            created=created,
            updated=created,
        )
        self._store.put_job(upload_id, job, owner)
        # Taken before anything else: another orchestrator looking for leasable jobs could take
        # it first, and then that one runs it.
        runs_here = not self._store.shared or self._take_lease(job.job_id)
        minutes, seconds = divmod(int(upload.audio.duration_seconds), 60)
        self._events.emit(
            job,
            pb.STAGE_UPLOAD,
            100.0,
            f"received {upload.filename} ({upload.size / 1e6:.1f} MB, {minutes}:{seconds:02d})",
        )
        if runs_here:
            self._start(job, None)
        return job

    def _check_room(self) -> None:
        """RESOURCE_EXHAUSTED when this orchestrator runs or queues as many jobs as it may."""
        limit = self._settings.max_running_jobs + self._settings.max_queued_jobs
        if len(self._tasks) >= limit:
            raise ResourceExhausted(f"{len(self._tasks)} jobs are running or queued; try again later")

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
        if job.state in TERMINAL_STATES:
            return job
        if job.state == pb.JOB_STATE_PAUSED:  # no orchestrator runs it: it ends here
            # On a copy: the answer is the job as it was before the cancel, as for a running job.
            self._finish_cancelled(pb.Job.FromString(job.SerializeToString()))
            self._count_paused()
            return job
        if job_id in self._tasks:
            self._cancel_task(job_id)
        elif self._store.shared:  # another orchestrator runs it, or will take it over
            self._store.request_cancel(job_id)
        return job

    def _cancel_task(self, job_id: str) -> None:
        self._cancelling.add(job_id)
        self._tasks[job_id].cancel()

    async def pause(self, job_id: str) -> pb.Job:
        """Stops a queued or running job at its last checkpoint and returns it PAUSED; a paused
        job is returned as it is. FAILED_PRECONDITION for a job that ended."""
        job = self.get(job_id)
        if job.state in TERMINAL_STATES:
            raise FailedPrecondition(
                f"job {job_id} has ended ({state_name(job.state)}): "
                "only a queued or running job can be paused"
            )
        if job.state == pb.JOB_STATE_PAUSED:
            return job
        task = self._tasks.get(job_id)
        if task is not None:
            self._pause_task(job_id)
            await asyncio.wait({task})  # its stage calls are cancelled and the PAUSED event stored
        elif self._store.shared:  # another orchestrator runs it, or will take it over
            self._store.request_pause(job_id)
            await self._wait_for_state(job_id, REMOTE_PAUSE_WAIT_SECONDS)
        return self.get(job_id)

    async def _wait_for_state(self, job_id: str, seconds: float) -> None:
        """Follows the job's events until it is paused or ended, for at most `seconds`."""

        async def settled() -> None:
            async for event in self._events.watch(job_id, self.get(job_id).last_event.seq):
                if event.state == pb.JOB_STATE_PAUSED:
                    return

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(settled(), seconds)

    def resume(self, job_id: str) -> pb.Job:
        """Queues a paused job again; it goes on from its checkpoints. FAILED_PRECONDITION for a
        job that is not paused, RESOURCE_EXHAUSTED when the queue is full."""
        job = self.get(job_id)
        if job.state != pb.JOB_STATE_PAUSED:
            raise FailedPrecondition(
                f"job {job_id} is {state_name(job.state)}, not paused: only a paused job can be resumed"
            )
        self._check_room()
        # Queued as after its upload, as a new job waits; its stages' cards keep where they were.
        self._requeue(job, pb.STAGE_UPLOAD, 100.0, "queued again: resuming", job.last_event.overall_percent)
        self._count_paused()
        self._run_here(job, RESUMED_NOTE)
        return job

    def retry(self, job_id: str) -> pb.Job:
        """Runs a FAILED, PARTIAL or CANCELLED job again: the stages that succeeded keep their
        output and files, the others run again. FAILED_PRECONDITION for any other state or when
        the song is gone; RESOURCE_EXHAUSTED when the queue is full."""
        job = self.get(job_id)
        if job.state not in RETRYABLE_STATES:
            why = "it succeeded" if job.state == pb.JOB_STATE_SUCCEEDED else "it has not ended"
            raise FailedPrecondition(
                f"job {job_id} is {state_name(job.state)}: only a failed, partial or cancelled job can be "
                f"retried ({why})"
            )
        self._check_song(job_id)
        self._check_room()
        # A stage recorded done can still have failed (karaoke whose video failed); a cancel's error
        # names the stage it came in, not one that failed.
        failed = {error.stage for error in job.errors if error.code != "CANCELLED"}
        self._store.undo_stages(job_id, failed)
        done = self._store.stages_done(job_id)
        again = [name for stage, name in STAGE_NAMES.items() if stage not in done]
        del job.errors[:]
        # Queued as after its upload; its overall percent counts again from the stages kept.
        self._requeue(job, pb.STAGE_UPLOAD, 100.0, f"queued again: retrying {', '.join(again)}", 0.0)
        self._run_here(job, RETRIED_NOTE)
        return job

    def _check_song(self, job_id: str) -> None:
        """FAILED_PRECONDITION when the job's song or files were deleted (a retry needs both)."""
        s = self._settings
        if self._store.files_deleted(job_id):
            raise FailedPrecondition(
                f"the files of job {job_id} were deleted {s.retention_days:g} days after it ended "
                "(ROAR_RETENTION_DAYS): submit the song again"
            )
        upload_id = self._store.upload_of(job_id)
        if self._store.get_upload(upload_id) is None or not self._uploads.audio_path(upload_id).is_file():
            raise FailedPrecondition(
                f"the song of job {job_id} was deleted (songs are kept {s.upload_ttl_hours:g} hours, "
                "ROAR_UPLOAD_TTL_HOURS; job files ROAR_RETENTION_DAYS): submit the song again"
            )

    def _requeue(self, job: pb.Job, stage: int, percent: float, message: str, overall: float) -> None:
        """Makes the job QUEUED again, with an event that says why."""
        if self._store.shared:
            self._store.clear_requests(job.job_id)
        job.state = pb.JOB_STATE_QUEUED
        self._store.restart_clock(job.job_id)  # the time limit counts from now
        self._events.emit(job, stage, percent, message, overall=overall)

    def _run_here(self, job: pb.Job, note: str) -> None:
        """Runs the queued job here (on a shared store: when this orchestrator gets its lease; else
        whichever takes it over runs it)."""
        if not self._store.shared or self._take_lease(job.job_id):
            self._start(job, note)

    def resume_unfinished(self) -> None:
        self._count_paused()
        if not self._store.shared:
            for job in self._store.unfinished_jobs():
                self._resume(job, RESTARTED_NOTE)
            return
        self._take_over(RESTARTED_NOTE)

    def _resume(self, job: pb.Job, note: str) -> None:
        if self._store.reconcile(job):
            seq = job.last_event.seq
            log.warning("job %s: its row lagged its events; brought up to seq %d", job.job_id, seq)
        if job.state in TERMINAL_STATES:  # its final event was stored: it finished
            if self._store.shared:
                self._store.drop_lease(job.job_id, self._lease_owner)
            return
        log.info("resuming job %s", job.job_id)
        self._start(job, note)

    async def shutdown(self) -> None:
        """Stops the running jobs without marking them: the next start (or, on a shared store,
        another orchestrator) resumes them."""
        self._stopping = True  # the queue empties without telling each job a new place
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # Several orchestrators on a shared store.

    def _take_lease(self, job_id: str) -> bool:
        return self._store.take_lease(job_id, self._lease_owner, self._settings.lease_seconds)

    def _take_over(self, note: str) -> None:
        """Resumes the unfinished jobs no orchestrator holds, as many as this one has room for."""
        limit = self._settings.max_running_jobs + self._settings.max_queued_jobs
        for job in self._store.leasable_jobs():
            if len(self._tasks) >= limit:
                return
            if job.job_id not in self._tasks and self._take_lease(job.job_id):
                self._resume(job, note)

    def _renew_leases(self) -> None:
        """Renews the lease of every job here; a job whose lease another orchestrator took (this
        one stalled past ROAR_LEASE_SECONDS) is stopped here without an event, and a cancel
        recorded by another orchestrator is carried out (in case its announcement was lost)."""
        for job_id, task in list(self._tasks.items()):
            if not self._store.renew_lease(job_id, self._lease_owner, self._settings.lease_seconds):
                log.warning("job %s: its lease went to another orchestrator; stopping it here", job_id)
                task.cancel()
            elif job_id not in self._cancelling and self._store.cancel_requested(job_id):
                self._cancel_task(job_id)
            elif job_id not in self._pausing and self._store.pause_requested(job_id):
                self._pause_task(job_id)

    async def coordinate(self) -> None:
        """A shared store's work, until cancelled: keeps this orchestrator's leases, takes over
        jobs whose lease expired, and follows the events and cancels other orchestrators
        announce."""
        await asyncio.gather(self._keep_leases(), listen(self._store.database_url, self._on_notify))

    async def _keep_leases(self) -> None:
        while True:
            await asyncio.sleep(self._settings.lease_seconds / 3)
            try:
                self._renew_leases()
                self._take_over(TAKEN_OVER_NOTE)
            except Exception:  # the store was unreachable: the next round tries again
                log.exception("renewing leases or taking jobs over failed")

    def _on_notify(self, channel: str, job_id: str) -> None:
        if channel == EVENTS_CHANNEL:
            self._events.wake(job_id)
        elif channel == CANCELS_CHANNEL and job_id in self._tasks and job_id not in self._cancelling:
            self._cancel_task(job_id)
        elif channel == PAUSES_CHANNEL and job_id in self._tasks and job_id not in self._pausing:
            self._pause_task(job_id)

    def _pause_task(self, job_id: str) -> None:
        """Pauses a job this orchestrator runs (a cancel asked before wins)."""
        if job_id not in self._cancelling:
            self._pausing.add(job_id)
            self._tasks[job_id].cancel()

    # Running.

    def _start(self, job: pb.Job, resume_note: str | None) -> None:
        """Runs the job in a task; `resume_note` is the first event of a resumed job."""
        task = asyncio.create_task(self._run(job, resume_note))
        self._tasks[job.job_id] = task

        def forget(ended: asyncio.Task[None]) -> None:
            if self._tasks.get(job.job_id) is ended:  # a job retried the moment it ended has a new task
                del self._tasks[job.job_id]

        task.add_done_callback(forget)

    async def _run(self, job: pb.Job, resume_note: str | None) -> None:
        try:
            if self._store.shared and self._store.cancel_requested(job.job_id):
                # Cancelled through another orchestrator while none ran it.
                self._finish_cancelled(job)
                return
            if self._store.shared and self._store.pause_requested(job.job_id):
                self._finish_paused(job)  # paused likewise
                return
            if self._slots.locked():
                self._queue.append(job)
                self._tell_places()
            async with metrics.job_slot(self._slots):
                self._running[job.job_id] = job  # first: the jobs behind count its run
                self._leave_queue(job)
                job.state = pb.JOB_STATE_RUNNING
                if resume_note:
                    self._events.emit(job, job.last_event.stage, job.last_event.stage_percent, resume_note)
                song = self._uploads.audio_path(self._store.upload_of(job.job_id))
                await self._pipeline.run(job, song)
        except asyncio.CancelledError:
            if job.job_id in self._cancelling:
                self._cancelling.discard(job.job_id)
                self._pausing.discard(job.job_id)
                self._finish_cancelled(job)
            elif job.job_id in self._pausing:
                self._pausing.discard(job.job_id)
                self._finish_paused(job)
            else:
                raise  # the server is stopping: the job resumes at the next start
        except Exception as exc:  # never leave a job hanging: report what broke
            log.exception("job %s failed", job.job_id)
            message = internal_message(exc)
            job.errors.add(code="INTERNAL", message=message, stage=job.last_event.stage)
            self._pipeline.finish(job, pb.JOB_STATE_FAILED, f"failed: {message}")
        finally:
            self._leave_queue(job)  # cancelled while it waited
            self._running.pop(job.job_id, None)
            if self._store.shared:  # free for another orchestrator (only while it is this one's)
                self._store.drop_lease(job.job_id, self._lease_owner)

    # The queue.

    def _leave_queue(self, job: pb.Job) -> None:
        """Takes the job out of the queue (it started, or was cancelled while it waited); the jobs
        behind it are told their new place."""
        if self._places.pop(job.job_id, None) is not None:  # every job in the queue was told a place
            self._queue = [queued for queued in self._queue if queued.job_id != job.job_id]
            if not self._stopping:
                self._tell_places()

    def _tell_places(self) -> None:
        """An event for each queued job whose place in line changed: its place, the expected wait
        (the time left of the running jobs and of the queued ones ahead, over the workers) and an
        ETA of the wait and its own run. Without a time when any of those jobs has no measured
        speed to go by."""
        if not self._queue:
            return
        speeds = LearnedSpeeds(StageTime._make(row) for row in self._store.stage_runs())
        ahead: float | None = 0.0  # seconds of work ahead of the next job in line
        for running in self._running.values():
            left = self._time_left(running, speeds)
            ahead = None if ahead is None or left is None else ahead + left
        for place, job in enumerate(self._queue, start=1):
            own = speeds.job_seconds(job.options, job.audio.duration_seconds)
            if self._places.get(job.job_id) != place:
                self._places[job.job_id] = place
                wait = None if ahead is None else ahead / self._settings.max_running_jobs
                message = f"queued: {_ordinal(place)} in line"
                if wait is not None:
                    message += f", about {_duration(wait)} to wait"
                eta = None if wait is None or own is None else wait + own
                self._events.emit(job, pb.STAGE_UPLOAD, 100.0, message, eta=eta)
            ahead = None if ahead is None or own is None else ahead + own

    @staticmethod
    def _time_left(job: pb.Job, speeds: LearnedSpeeds) -> float | None:
        """Seconds until a running job ends: its last ETA less the time since, or else (it just
        started, or a stage just ended) the share of its whole run its overall percent has left;
        None when its kinds of work have no measured speed (its ETA is a default guess)."""
        whole = speeds.job_seconds(job.options, job.audio.duration_seconds)
        if whole is None:
            return None
        last = job.last_event
        if last.state != pb.JOB_STATE_RUNNING:
            return whole
        if last.HasField("eta_seconds"):
            since = now().ToNanoseconds() / 1e9 - last.timestamp.ToNanoseconds() / 1e9
            return max(last.eta_seconds - since, 0.0)
        return whole * (1.0 - last.overall_percent / 100.0)

    def _finish_paused(self, job: pb.Job) -> None:
        """The job's PAUSED event; its stages' records and checkpoints stay for ResumeJob."""
        job.state = pb.JOB_STATE_PAUSED
        self._events.emit(job, job.last_event.stage, job.last_event.stage_percent, paused_message(job.job_id))
        self._count_paused()

    def _count_paused(self) -> None:
        """roar_jobs_paused from the store: on a shared store, every orchestrator's paused jobs."""
        metrics.JOBS_PAUSED.set(self._store.count_jobs(pb.JOB_STATE_PAUSED))

    def _finish_cancelled(self, job: pb.Job) -> None:
        job.errors.add(code="CANCELLED", message="cancelled by the user", stage=job.last_event.stage)
        self._pipeline.finish(job, pb.JOB_STATE_CANCELLED, "cancelled")


def _ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, ... 11th, 12th, 13th, ... 21st."""
    suffix = "th" if number % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def _duration(seconds: float) -> str:
    """ "1 min 30 s", "45 s": a wait as people say it."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
