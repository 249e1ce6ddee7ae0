"""Deletes what the disk would otherwise keep for ever: uploads nobody finished or no longer
needs (after ROAR_UPLOAD_TTL_HOURS) and finished jobs' files (after ROAR_RETENTION_DAYS; the
job's row stays, with its state and events). Runs in the orchestrator's event loop, like every
other user of the store, once at start and then every `Janitor.interval` seconds."""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from orchestrator.store import Store
from orchestrator.uploads import Uploads
from roar.config import Settings

log = logging.getLogger("roar.janitor")

SWEEP_INTERVAL_SECONDS = 600.0


@dataclass(frozen=True)
class Swept:
    uploads: int
    stray_files: int
    jobs: int


class Janitor:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        uploads: Uploads,
        jobs_dir: Path,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._store = store
        self._uploads = uploads
        self._jobs_dir = jobs_dir
        self._clock = clock

    def sweep(self) -> Swept:
        now = self._clock()
        uploads = stray_files = jobs = 0
        if self._settings.upload_ttl_hours > 0:
            created_before = now - self._settings.upload_ttl_hours * 3600
            # Unfinished uploads, and finished ones no unfinished job uses: the row goes first,
            # so no new job can start on files about to vanish.
            for upload_id in self._store.expirable_uploads(created_before):
                self._store.delete_upload(upload_id)
                self._uploads.delete_files(upload_id)
                uploads += 1
            stray_files = self._delete_stray_files(created_before)
        if self._settings.retention_days > 0:
            ended_before = now - self._settings.retention_days * 86400
            for job in self._store.jobs_ended_before(ended_before):
                shutil.rmtree(self._jobs_dir / job.job_id, ignore_errors=True)
                self._store.mark_files_deleted(job, now)
                jobs += 1
        if uploads or stray_files or jobs:
            log.info(
                "deleted %d expired uploads, %d stray files, the files of %d jobs", uploads, stray_files, jobs
            )
        return Swept(uploads=uploads, stray_files=stray_files, jobs=jobs)

    def _delete_stray_files(self, modified_before: float) -> int:
        """Files in the uploads folder older than the TTL that belong to no upload (a crash
        between writing and recording) or are leftovers of an interrupted FinishUpload."""
        known = self._store.upload_ids()
        deleted = 0
        for path in self._uploads.directory.iterdir():
            upload_id = path.name.lstrip(".").split(".")[0]
            leftover = path.name.startswith(".") or upload_id not in known
            try:
                if leftover and path.is_file() and path.stat().st_mtime < modified_before:
                    path.unlink()
                    deleted += 1
            except FileNotFoundError:
                pass  # gone meanwhile
        return deleted

    @property
    def interval(self) -> float:
        """Seconds between sweeps: SWEEP_INTERVAL_SECONDS, or a quarter of a shorter upload TTL, so
        nothing outlives its TTL by much."""
        ttl = self._settings.upload_ttl_hours * 3600
        return min(SWEEP_INTERVAL_SECONDS, ttl / 4) if ttl > 0 else SWEEP_INTERVAL_SECONDS

    async def run(self) -> None:
        interval = self.interval
        while True:
            try:
                self.sweep()
            except Exception:  # a failed sweep must not end the sweeping: the next one retries
                log.exception("cleaning up expired files failed")
            await asyncio.sleep(interval)
