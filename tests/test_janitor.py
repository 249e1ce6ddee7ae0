"""The janitor (upload TTL, retention of finished jobs' files) with an injected clock, and
ListJobs pages that stay under gRPC's default 4 MB whatever the jobs hold; real SQLite and
real files, no servers."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from orchestrator.janitor import Janitor
from orchestrator.jobs import Jobs
from orchestrator.stages import StageClients
from orchestrator.store import Store
from orchestrator.uploads import Uploads
from roar.config import Settings
from roar.errors import NotFound
from roar.v1 import orchestrator_pb2 as pb

HOUR = 3600.0
DAY = 24 * HOUR
# gRPC's default limit on a received message, which a ListJobs response must stay under.
DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def downloaded(server: Server, job_id: str) -> bytes:
    return b"".join(chunk.data for chunk in server.jobs.download(job_id, "vocals.wav", 0))


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclasses.dataclass
class Server:
    store: Store
    uploads: Uploads
    jobs: Jobs
    janitor: Janitor
    clock: Clock


def make_server(tmp_path: Path, **settings: float) -> Server:
    config = Settings(data_dir=tmp_path, **settings)
    store = Store(tmp_path / "roar.sqlite")
    uploads = Uploads(store, tmp_path / "uploads", 2**30, 600)
    # Channels connect lazily: nothing here calls a stage.
    jobs = Jobs(
        config,
        store,
        uploads,
        StageClients("127.0.0.1:1", "127.0.0.1:1", "127.0.0.1:1", retry_seconds=config.stage_retry_seconds),
    )
    clock = Clock()
    return Server(store, uploads, jobs, Janitor(config, store, uploads, jobs.directory, clock), clock)


def finished_upload(server: Server) -> str:
    upload = server.uploads.start("song.wav", 10, "audio/wav")
    server.uploads.normalised_path(upload.upload_id).write_bytes(b"flac")
    server.store.finish_upload(upload.upload_id, pb.Upload().audio)
    return upload.upload_id


def stamp(seconds: float) -> Timestamp:
    result = Timestamp()
    result.FromNanoseconds(int(seconds * 1e9))
    return result


def add_job(server: Server, upload_id: str, state: int, ended: float, lyrics: str = "") -> pb.Job:
    """A job row with an event and, for finished jobs, an artifact on disk."""
    job = pb.Job(
        job_id=f"job{len(server.store.list_jobs(10_000, 0))}",
        state=state,
        filename="song.wav",
        options=pb.JobOptions(lyrics=lyrics),
        created=stamp(ended - 60),
        updated=stamp(ended),
    )
    job_dir = server.jobs.directory / job.job_id
    job_dir.mkdir(parents=True)
    (job_dir / "vocals.wav").write_bytes(b"vocals")
    job.artifacts.add(name="vocals.wav", kind="stem", size=6)
    server.store.put_job(upload_id, job)
    server.store.record(pb.ProgressEvent(job_id=job.job_id, state=state, timestamp=stamp(ended)), job)
    return job


async def test_uploads_expire_after_the_ttl_unless_an_unfinished_job_needs_them(tmp_path: Path) -> None:
    server = make_server(tmp_path, upload_ttl_hours=24)
    abandoned = server.uploads.start("a.wav", 100, "").upload_id
    unused = finished_upload(server)
    used_by_finished = finished_upload(server)
    used_by_running = finished_upload(server)
    add_job(server, used_by_finished, pb.JOB_STATE_SUCCEEDED, server.clock.now)
    add_job(server, used_by_running, pb.JOB_STATE_RUNNING, server.clock.now)
    stray = server.uploads.directory / "0123abcd"
    stray.write_bytes(b"left by a crash")
    leftover = server.uploads.directory / f".{unused}.feed.part"
    leftover.write_bytes(b"half a FLAC")

    server.clock.now += 23 * HOUR
    assert server.janitor.sweep().uploads == 0
    assert server.uploads.get(abandoned)

    server.clock.now += 2 * HOUR
    # Files count by their modification time, rows by their creation.
    for path in (stray, leftover):
        old = server.clock.now - 25 * HOUR
        os.utime(path, (old, old))
    swept = server.janitor.sweep()
    assert (swept.uploads, swept.stray_files) == (3, 2)
    for upload_id in (abandoned, unused, used_by_finished):
        with pytest.raises(NotFound):
            server.uploads.get(upload_id)
        assert not server.uploads.path(upload_id).exists()
        assert not server.uploads.normalised_path(upload_id).exists()
    assert not stray.exists() and not leftover.exists()
    assert server.uploads.get(used_by_running).finished
    assert server.uploads.audio_path(used_by_running).read_bytes() == b"flac"


async def test_a_zero_ttl_keeps_uploads(tmp_path: Path) -> None:
    server = make_server(tmp_path, upload_ttl_hours=0)
    upload_id = server.uploads.start("a.wav", 100, "").upload_id
    server.clock.now += 1000 * DAY
    assert server.janitor.sweep().uploads == 0
    assert server.uploads.path(upload_id).exists()


async def test_finished_jobs_lose_their_files_after_the_retention_but_keep_their_row(tmp_path: Path) -> None:
    server = make_server(tmp_path, retention_days=7)
    upload_id = finished_upload(server)
    now = server.clock.now
    old = add_job(server, upload_id, pb.JOB_STATE_SUCCEEDED, now - 8 * DAY)
    recent = add_job(server, upload_id, pb.JOB_STATE_PARTIAL, now - 6 * DAY)
    running = add_job(server, upload_id, pb.JOB_STATE_RUNNING, now - 30 * DAY)

    assert server.janitor.sweep().jobs == 1
    assert not (server.jobs.directory / old.job_id).exists()
    kept = server.jobs.get(old.job_id)
    assert kept.state == pb.JOB_STATE_SUCCEEDED and not kept.artifacts
    assert [e.seq for e in server.store.events_after(old.job_id, 0)] == [1]
    with pytest.raises(NotFound) as info:
        list(server.jobs.download(old.job_id, "vocals.wav", 0))
    assert "expired" in info.value.message and "ROAR_RETENTION_DAYS" in info.value.message
    assert str(tmp_path) not in info.value.message
    for job in (recent, running):
        assert downloaded(server, job.job_id) == b"vocals"

    server.clock.now += 2 * DAY
    assert server.janitor.sweep().jobs == 1  # `recent` now; `old` is not counted twice
    assert (server.jobs.directory / running.job_id).exists()


async def test_a_zero_retention_keeps_every_file(tmp_path: Path) -> None:
    server = make_server(tmp_path, retention_days=0)
    job = add_job(server, finished_upload(server), pb.JOB_STATE_SUCCEEDED, server.clock.now - 1000 * DAY)
    assert server.janitor.sweep().jobs == 0
    assert downloaded(server, job.job_id) == b"vocals"


async def test_sweeps_come_at_least_four_times_per_ttl(tmp_path: Path) -> None:
    assert make_server(tmp_path / "a", upload_ttl_hours=0.01).janitor.interval == pytest.approx(9.0)
    assert make_server(tmp_path / "b", upload_ttl_hours=24).janitor.interval == 600.0


async def test_list_pages_stay_under_the_default_message_limit(tmp_path: Path) -> None:
    """Fifteen jobs of 100,000 four-byte characters of lyrics each (6 MB together): every page
    is under 4 MB, and the pages list every job once, newest first."""
    server = make_server(tmp_path)
    upload_id = finished_upload(server)
    lyrics = "𝄞" * 100_000
    added = [
        add_job(server, upload_id, pb.JOB_STATE_SUCCEEDED, server.clock.now + k, lyrics) for k in range(15)
    ]
    assert sum(job.ByteSize() for job in added) > DEFAULT_MAX_MESSAGE_BYTES

    listed, token, pages = [], "", 0
    while True:
        page = server.jobs.list(page_size=500, page_token=token)
        assert page.ByteSize() < DEFAULT_MAX_MESSAGE_BYTES
        listed += [job.job_id for job in page.jobs]
        pages += 1
        if not page.next_page_token:
            break
        token = page.next_page_token
    assert listed == [job.job_id for job in reversed(added)]
    assert pages > 1
