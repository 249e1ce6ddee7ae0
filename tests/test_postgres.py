"""Several orchestrators on PostgreSQL (ROAR_DATABASE_URL), against a real PostgreSQL 15 server
started here in a temp dir: the store gives the same answers on PostgreSQL as on the embedded
SQLite file; two writers of one job's events never share or skip a seq; an event stored by one
orchestrator is announced to the others (LISTEN/NOTIFY); leases let one orchestrator at a time run
a job and free it when that one dies."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.store import CANCELS_CHANNEL, EVENTS_CHANNEL, Checkpoint, Store, listen
from roar.v1 import common_pb2
from roar.v1 import orchestrator_pb2 as pb
from tests.support.postgres import PostgresServer, running_postgres


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    yield from running_postgres()


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty store on each backend (a fresh database for PostgreSQL)."""
    if request.param == "sqlite":
        opened = Store(tmp_path / "roar.sqlite")
    else:
        opened = Store(request.getfixturevalue("postgres").new_database())
    yield opened
    opened.close()


def _job(job_id: str, state: int = pb.JOB_STATE_RUNNING, created: float | None = None) -> pb.Job:
    job = pb.Job(job_id=job_id, state=state, filename="song.wav")
    if created is None:
        job.created.GetCurrentTime()
    else:
        job.created.FromNanoseconds(int(created * 1e9))
    job.updated.GetCurrentTime()
    return job


def _event(job: pb.Job, message: str) -> pb.ProgressEvent:
    event = pb.ProgressEvent(job_id=job.job_id, stage=pb.STAGE_SEPARATION, message=message, state=job.state)
    event.timestamp.GetCurrentTime()
    return event


# The store: the same calls give the same answers on both backends.


def test_events_get_consecutive_seqs_and_the_row_follows_the_last(store: Store) -> None:
    job = _job("j1")
    store.put_job("u1", job)
    for message in ("one", "two", "three"):
        store.record(_event(job, message), job)
    assert [(e.seq, e.message) for e in store.events_after("j1", 0)] == [(1, "one"), (2, "two"), (3, "three")]
    assert [e.seq for e in store.events_after("j1", 2)] == [3]
    assert store.last_seq("j1") == 3 and store.last_seq("nothing") == 0
    assert store.get_job("j1").last_event.message == "three"
    stale = store.get_job("j1")
    stale.last_event.CopyFrom(store.events_after("j1", 1)[0])
    store.put_job("u1", stale)
    assert store.reconcile(stale) is True
    assert store.get_job("j1").last_event.seq == 3
    assert store.reconcile(store.get_job("j1")) is False


def test_an_event_for_a_job_without_a_row_is_not_stored(store: Store) -> None:
    orphan = _job("no-row")
    with pytest.raises(LookupError):
        store.record(_event(orphan, "lost"), orphan)
    assert store.events_after("no-row", 0) == [] and store.last_seq("no-row") == 0


def test_uploads_and_their_expiry(store: Store) -> None:
    upload = pb.Upload(upload_id="u1", filename="song.wav", size=3_000_000_000)  # past 32 bits
    store.add_upload(upload, "audio/wav", owner="k1")
    store.add_upload(pb.Upload(upload_id="u2", filename="b.wav", size=5), "", owner="")
    assert store.upload_owner("u1") == "k1" and store.upload_owner("absent") is None
    store.set_committed("u1", 2_999_999_999)
    assert store.get_upload("u1") == pb.Upload(
        upload_id="u1", filename="song.wav", size=3_000_000_000, committed=2_999_999_999
    )
    store.finish_upload("u1", common_pb2.AudioInfo(duration_seconds=61.5, sample_rate=44100, channels=2))
    finished = store.get_upload("u1")
    assert finished.finished and finished.audio.duration_seconds == 61.5
    store.put_job("u2", _job("running"))
    assert store.upload_ids() == {"u1", "u2"}
    assert store.expirable_uploads(time.time() + 1) == ["u1"]  # u2's job still needs it
    store.delete_upload("u1")
    assert store.get_upload("u1") is None


def test_jobs_list_newest_first_by_owner_and_keep_their_owner(store: Store) -> None:
    base = time.time() - 100
    for index, owner in enumerate(["a", "b", "a"]):
        store.put_job("u", _job(f"j{index}", pb.JOB_STATE_SUCCEEDED, created=base + index * 0.001), owner)
    assert [j.job_id for j in store.list_jobs(10, 0)] == ["j2", "j1", "j0"]
    assert [j.job_id for j in store.list_jobs(1, 1)] == ["j1"]
    assert [j.job_id for j in store.list_jobs(10, 0, owner="a")] == ["j2", "j0"]
    store.put_job("u", _job("j0", pb.JOB_STATE_FAILED, created=base), owner="b")  # an update
    assert store.job_owner("j0") == "a" and store.get_job("j0").state == pb.JOB_STATE_FAILED
    assert store.upload_of("j1") == "u" and store.get_job("absent") is None
    store.put_job("u", _job("open", pb.JOB_STATE_QUEUED))
    assert [j.job_id for j in store.unfinished_jobs()] == ["open"]
    ended = store.get_job("j1")
    ended.updated.FromSeconds(int(base))
    store.put_job("u", ended)
    assert [j.job_id for j in store.jobs_ended_before(base + 1)] == ["j1"]
    store.mark_files_deleted(ended, time.time())
    assert store.files_deleted("j1") and not store.files_deleted("j2")
    assert store.jobs_ended_before(base + 1) == []


def test_stages_checkpoints_and_passages(store: Store) -> None:
    store.set_checkpoint("j", pb.STAGE_SEPARATION, Checkpoint(b"\x00layout\xff", 2, 88200))
    store.set_checkpoint("j", pb.STAGE_SEPARATION, Checkpoint(b"\x00layout\xff", 3, 132300))
    assert store.checkpoint("j", pb.STAGE_SEPARATION) == Checkpoint(b"\x00layout\xff", 3, 132300)
    store.add_passage("j", 0, b"p0")
    store.add_passage("j", 1, b"p1")
    store.add_passage("j", 1, b"p1 again")
    assert store.passages("j") == [b"p0", b"p1 again"]
    store.finish_stage("j", pb.STAGE_SEPARATION, b"\x01out")
    store.finish_stage("j", pb.STAGE_KARAOKE)
    store.finish_stage("j", pb.STAGE_KARAOKE)  # again: replaced, not doubled
    assert store.checkpoint("j", pb.STAGE_SEPARATION) is None
    assert store.stages_done("j") == {pb.STAGE_SEPARATION: b"\x01out", pb.STAGE_KARAOKE: None}
    store.finish_stage("j", pb.STAGE_TRANSCRIPTION, b"t")
    assert store.passages("j") == []
    store.forget_stages("j")
    assert store.stages_done("j") == {}


def test_keys(store: Store) -> None:
    assert not store.has_active_keys()
    store.add_key("k1", "ci", "ab" * 32, admin=True)
    key = store.get_key("k1")
    assert key is not None and key.admin is True and key.revoked is None and key.name == "ci"
    assert store.has_active_keys() and [k.key_id for k in store.list_keys()] == ["k1"]
    assert store.revoke_key("k1") and not store.revoke_key("k1")
    assert store.get_key("k1").revoked is not None and not store.has_active_keys()


def test_the_newest_stage_runs_of_each_kind_are_kept(store: Store) -> None:
    for index in range(5):
        store.add_stage_run(pb.STAGE_SEPARATION, "htdemucs", 60.0, 10.0 + index, keep=3)
    store.add_stage_run(pb.STAGE_TRANSCRIPTION, "lyrics", 60.0, 2.0, keep=3)
    runs = store.stage_runs()
    assert [r[3] for r in runs if r[1] == "htdemucs"] == [14.0, 13.0, 12.0]
    assert (pb.STAGE_TRANSCRIPTION, "lyrics", 60.0, 2.0) in runs


def test_a_lease_is_held_by_one_orchestrator_until_dropped_or_expired(store: Store) -> None:
    store.put_job("u", _job("j"))
    store.put_job("u", _job("done", pb.JOB_STATE_SUCCEEDED))
    assert [j.job_id for j in store.leasable_jobs()] == ["j"]
    assert store.take_lease("j", "a", 30)
    assert not store.take_lease("j", "b", 30) and store.take_lease("j", "a", 30)
    assert store.leasable_jobs() == [] and not store.take_lease("done", "a", 30)
    assert store.renew_lease("j", "a", 30) and not store.renew_lease("j", "b", 30)
    store.drop_lease("j", "b")  # not b's: nothing happens
    assert not store.take_lease("j", "b", 30)
    store.drop_lease("j", "a")
    assert store.take_lease("j", "b", 0.2)
    time.sleep(0.3)  # b died: its lease ran out
    assert [j.job_id for j in store.leasable_jobs()] == ["j"]
    assert store.take_lease("j", "a", 30) and not store.renew_lease("j", "b", 30)
    assert not store.cancel_requested("j")
    store.request_cancel("j")
    assert store.cancel_requested("j")


# PostgreSQL only: several connections (orchestrators) at once.


def test_two_orchestrators_writing_one_jobs_events_never_share_or_skip_a_seq(
    postgres: PostgresServer,
) -> None:
    url = postgres.new_database()
    stores = [Store(url), Store(url)]  # the second start-up finds the tables made
    stores[0].put_job("u", _job("j"))
    per_writer = 40

    def write(store: Store, name: str) -> None:
        for index in range(per_writer):
            job = store.get_job("j")
            store.record(_event(job, f"{name}{index}"), job)

    writers = [threading.Thread(target=write, args=(s, n)) for s, n in zip(stores, "ab", strict=True)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    events = stores[1].events_after("j", 0)
    assert [e.seq for e in events] == list(range(1, 2 * per_writer + 1))
    assert sorted(e.message for e in events) == sorted(f"{n}{i}" for n in "ab" for i in range(per_writer))
    for store in stores:
        store.close()


async def test_events_and_cancels_are_announced_to_every_listener(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    store = Store(url)
    store.put_job("u", _job("j"))
    heard: list[tuple[str, str]] = []
    both = asyncio.Event()

    def on_notify(channel: str, job_id: str) -> None:
        heard.append((channel, job_id))
        if len(heard) == 2:
            both.set()

    listener = asyncio.create_task(listen(url, on_notify))
    try:
        await asyncio.sleep(0.5)  # LISTEN is under way
        job = store.get_job("j")
        store.record(_event(job, "one"), job)
        store.request_cancel("j")
        await asyncio.wait_for(both.wait(), 10)
    finally:
        listener.cancel()
        store.close()
    assert heard == [(EVENTS_CHANNEL, "j"), (CANCELS_CHANNEL, "j")]
