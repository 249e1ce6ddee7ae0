"""Several orchestrators on PostgreSQL (ROAR_DATABASE_URL), against a real PostgreSQL 15 server
started here in a temp dir: the store gives the same answers on PostgreSQL as on the embedded
SQLite file; two writers of one job's events never share or skip a seq; an event stored by one
orchestrator is announced to the others (LISTEN/NOTIFY); leases let one orchestrator at a time run
a job and free it when that one dies."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.events import Events
from orchestrator.jobs import RESUMED_NOTE, TAKEN_OVER_NOTE, paused_message
from orchestrator.store import (
    CANCELS_CHANNEL,
    EVENTS_CHANNEL,
    STORE_FILE,
    Checkpoint,
    StageResult,
    Store,
    listen,
)
from roar import cli, client
from roar.config import Settings
from roar.errors import Unavailable
from roar.metrics import OK
from roar.v1 import common_pb2
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support.postgres import PostgresServer, running_postgres
from tests.support.processes import ServiceProcesses, service_env
from tests.support.songs import write_song
from tests.support.store_rows import new_event, new_job
from tests.support.suite import free_port


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


# The store: the same calls give the same answers on both backends.


async def test_a_watch_reads_a_final_event_stored_between_its_two_reads(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watcher that finds no new event reads the job's row next; another orchestrator may store
    the job's final event in between. The watch must still deliver it, not end on the row's
    final state."""
    job = new_job("j1")
    store.put_job("u1", job)
    store.record(new_event(job, "first"), job)
    read_events = store.events_after

    def finished_by_another_orchestrator(job_id: str, after_seq: int) -> list[pb.ProgressEvent]:
        found = read_events(job_id, after_seq)
        if not found and job.state != pb.JOB_STATE_SUCCEEDED:
            job.state = pb.JOB_STATE_SUCCEEDED
            store.record(new_event(job, "done"), job)
        return found

    monkeypatch.setattr(store, "events_after", finished_by_another_orchestrator)
    watched = [event.message async for event in Events(store).watch("j1", 0)]
    assert watched == ["first", "done"]


def test_events_get_consecutive_seqs_and_the_row_follows_the_last(store: Store) -> None:
    job = new_job("j1")
    store.put_job("u1", job)
    for message in ("one", "two", "three"):
        store.record(new_event(job, message), job)
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
    orphan = new_job("no-row")
    with pytest.raises(LookupError):
        store.record(new_event(orphan, "lost"), orphan)
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
    store.put_job("u2", new_job("running"))
    assert store.upload_ids() == {"u1", "u2"}
    assert store.expirable_uploads(time.time() + 1) == ["u1"]  # u2's job still needs it
    store.delete_upload("u1")
    assert store.get_upload("u1") is None


def test_jobs_list_newest_first_by_owner_and_keep_their_owner(store: Store) -> None:
    base = time.time() - 100
    for index, owner in enumerate(["a", "b", "a"]):
        store.put_job("u", new_job(f"j{index}", pb.JOB_STATE_SUCCEEDED, created=base + index * 0.001), owner)
    assert [j.job_id for j in store.list_jobs(10, 0)] == ["j2", "j1", "j0"]
    assert [j.job_id for j in store.list_jobs(1, 1)] == ["j1"]
    assert [j.job_id for j in store.list_jobs(10, 0, owner="a")] == ["j2", "j0"]
    store.put_job("u", new_job("j0", pb.JOB_STATE_FAILED, created=base), owner="b")  # an update
    assert store.job_owner("j0") == "a" and store.get_job("j0").state == pb.JOB_STATE_FAILED
    assert store.upload_of("j1") == "u" and store.get_job("absent") is None
    store.put_job("u", new_job("open", pb.JOB_STATE_QUEUED))
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


def test_stage_results_and_jobs_by_time(store: Store) -> None:
    base = 1_700_000_000.0
    store.put_job("u", new_job("mine", created=base), owner="k1")
    store.put_job("u", new_job("theirs", created=base + 10), owner="k2")
    store.add_stage_result("mine", pb.STAGE_SEPARATION, OK, 12.5, 60.0, base + 20)
    store.add_stage_result("theirs", pb.STAGE_TRANSCRIPTION, "UNAVAILABLE", 3.0, 30.0, base + 30)
    assert store.stage_results_between(base, base + 30) == [
        StageResult(pb.STAGE_SEPARATION, OK, 12.5, 60.0, base + 20)
    ]
    assert [r.code for r in store.stage_results_between(base, base + 31, owner="k2")] == ["UNAVAILABLE"]
    assert [j.job_id for j in store.jobs_created_between(base, base + 11)] == ["theirs", "mine"]
    assert [j.job_id for j in store.jobs_created_between(base + 1, base + 11, owner="k2")] == ["theirs"]


def test_a_lease_is_held_by_one_orchestrator_until_dropped_or_expired(store: Store) -> None:
    store.put_job("u", new_job("j"))
    store.put_job("u", new_job("done", pb.JOB_STATE_SUCCEEDED))
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
    assert not store.pause_requested("j")
    store.request_pause("j")
    assert store.pause_requested("j")
    store.clear_requests("j")
    assert not store.cancel_requested("j") and not store.pause_requested("j")


def test_a_paused_job_is_neither_resumed_nor_leased(store: Store) -> None:
    store.put_job("u", new_job("paused", pb.JOB_STATE_PAUSED))
    store.put_job("u", new_job("queued", pb.JOB_STATE_QUEUED))
    assert [j.job_id for j in store.unfinished_jobs()] == ["queued"]
    assert [j.job_id for j in store.leasable_jobs()] == ["queued"]
    assert not store.take_lease("paused", "a", 30)
    assert store.count_jobs(pb.JOB_STATE_PAUSED) == 1


def test_the_database_settings_refuse_what_they_cannot_use(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROAR_DATABASE_URL", "mysql://root:secret@db/roar")
    with pytest.raises(SystemExit) as refused:
        Settings.from_env()
    assert "postgresql://" in str(refused.value) and "secret" not in str(refused.value)
    monkeypatch.setenv("ROAR_DATABASE_URL", "postgresql://roar@db/roar")
    monkeypatch.setenv("ROAR_LEASE_SECONDS", "0")
    with pytest.raises(SystemExit, match="ROAR_LEASE_SECONDS"):
        Settings.from_env()
    monkeypatch.setenv("ROAR_LEASE_SECONDS", "7.5")
    settings = Settings.from_env()
    assert settings.database_url == "postgresql://roar@db/roar" and settings.lease_seconds == 7.5


# PostgreSQL only: several connections (orchestrators) at once.


def test_roar_keys_manage_the_keys_in_the_postgresql_store(
    postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = postgres.new_database()
    monkeypatch.setenv("ROAR_DATABASE_URL", url)
    with pytest.raises(SystemExit) as done:
        cli.main(["keys", "create", "--data-dir", str(tmp_path), "--name", "ci"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("roar_")
    store = Store(url)
    assert [k.name for k in store.list_keys()] == ["ci"]
    assert store.has_active_keys()
    assert not (tmp_path / STORE_FILE).exists()  # not the SQLite file
    store.close()


def test_a_store_whose_connection_broke_reconnects(postgres: PostgresServer) -> None:
    url = postgres.new_database()
    store = Store(url)
    job = new_job("j")
    store.put_job("u", job)

    def cut() -> None:  # what a server restart does to the store's connection
        import psycopg

        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )

    cut()
    with pytest.raises(Unavailable):  # a clear status for the one call that found out
        store.get_job("j")
    assert store.get_job("j").job_id == "j"
    store.record(new_event(job, "one"), job)
    cut()
    with pytest.raises(Unavailable):  # a transaction too, and it left nothing behind
        store.record(new_event(job, "lost"), job)
    store.record(new_event(job, "two"), job)
    assert [(e.seq, e.message) for e in store.events_after("j", 0)] == [(1, "one"), (2, "two")]
    store.close()


def test_two_orchestrators_writing_one_jobs_events_never_share_or_skip_a_seq(
    postgres: PostgresServer,
) -> None:
    url = postgres.new_database()
    stores = [Store(url), Store(url)]  # the second start-up finds the tables made
    stores[0].put_job("u", new_job("j"))
    per_writer = 40

    def write(store: Store, name: str) -> None:
        for index in range(per_writer):
            job = store.get_job("j")
            store.record(new_event(job, f"{name}{index}"), job)

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
    store.put_job("u", new_job("j"))
    heard: list[tuple[str, str]] = []
    listener = asyncio.create_task(listen(url, lambda channel, job_id: heard.append((channel, job_id))))

    async def until(condition: Callable[[], bool], action: Callable[[], None]) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, heard
            action()
            await asyncio.sleep(0.2)

    def record() -> None:
        job = store.get_job("j")
        store.record(new_event(job, "progress"), job)

    try:
        await until(lambda: bool(heard), record)  # once LISTEN is under way, each event is heard
        store.request_cancel("j")
        await until(lambda: (CANCELS_CHANNEL, "j") in heard, lambda: None)
        assert heard[-1] == (CANCELS_CHANNEL, "j") and set(heard[:-1]) == {(EVENTS_CHANNEL, "j")}
        # The listening connection is cut (a server restart): the listener connects again.
        import psycopg

        with psycopg.connect(url, autocommit=True) as admin:
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            ).fetchall()
        assert cut == [(True,)]
        heard.clear()
        await until(lambda: bool(heard), record)
    finally:
        listener.cancel()
        store.close()
    assert set(heard) == {(EVENTS_CHANNEL, "j")}


# The must-show: two orchestrator processes sharing the PostgreSQL store and one data dir, in
# front of one set of stage services (tiny random models).

# Long enough for many windows of the tiny Demucs, so a kill lands mid-stage.
SONG_SECONDS = 60.0
# Short, so a take-over comes soon; each orchestrator renews every third of it.
LEASE_SECONDS = 4.0
STAGE_SERVICES = ("separation", "transcription", "karaoke")
ORCHESTRATORS = ("a", "b")


@dataclass(kw_only=True)
class Site(ServiceProcesses):
    """The services as separate processes: the three stages, and orchestrators "a" and "b"."""

    database_url: str
    orchestrators: tuple[str, ...] = ORCHESTRATORS

    def windows_done(self, job_id: str) -> int:
        """The separation windows committed for the job (-1 before any)."""
        import psycopg

        with psycopg.connect(self.database_url) as connection:
            row = connection.execute(
                "SELECT windows_done FROM checkpoints WHERE job_id = %s", (job_id,)
            ).fetchone()
        return -1 if row is None else row[0]


@pytest.fixture(scope="module")
def site(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, str]
) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("site")
    names = [*STAGE_SERVICES, *ORCHESTRATORS, *(f"{o}-web" for o in ORCHESTRATORS)]
    ports = {name: free_port() for name in names}
    url = postgres.new_database()
    env = service_env(
        root / "data",  # one data dir: uploads and job files shared
        {
            **tiny_models,
            "ROAR_DATABASE_URL": url,
            "ROAR_LEASE_SECONDS": str(LEASE_SECONDS),
            "ROAR_SEPARATION_ADDR": f"127.0.0.1:{ports['separation']}",
            "ROAR_TRANSCRIPTION_ADDR": f"127.0.0.1:{ports['transcription']}",
            "ROAR_KARAOKE_ADDR": f"127.0.0.1:{ports['karaoke']}",
        },
    )
    running = Site(database_url=url, log_path=root / "services.log", env=env, ports=ports)
    with running.serving([*STAGE_SERVICES, *ORCHESTRATORS]):
        yield running


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_song(tmp_path_factory.mktemp("song") / "song.wav", SONG_SECONDS)


async def _upload(site: Site, through: str, song: Path) -> str:
    async with client.channel(site.address(through)) as channel:
        return (await client.upload_file(pb_grpc.OrchestratorStub(channel), song)).upload_id


async def _submit(site: Site, through: str, upload_id: str) -> str:
    """Starts a job through one orchestrator (which runs it) and leaves its stream."""
    async with client.channel(site.address(through)) as channel:
        process = pb_grpc.OrchestratorStub(channel).Process(pb.ProcessRequest(upload_id=upload_id))
        first = await process.read()
        process.cancel()  # the job runs on without a watcher
        return first.job_id


async def _watch(site: Site, through: str, job_id: str) -> list[pb.ProgressEvent]:
    """Every event of the job, through one orchestrator, until its last."""
    async with client.channel(site.address(through)) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        return [e async for e in stub.WatchJob(pb.WatchJobRequest(job_id=job_id))]


async def _download(site: Site, through: str, job_id: str) -> dict[str, bytes]:
    async with client.channel(site.address(through)) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        job = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
        files = {}
        for artifact in job.artifacts:
            chunks = stub.Download(pb.DownloadRequest(job_id=job_id, name=artifact.name))
            files[artifact.name] = b"".join([chunk.data async for chunk in chunks])
        return files


async def _mid_stage(site: Site, job_id: str) -> None:
    deadline = time.monotonic() + 120
    while site.windows_done(job_id) < 1:
        assert time.monotonic() < deadline, site.tail()
        await asyncio.sleep(0.05)


def _assert_each_event_once(events: list[pb.ProgressEvent]) -> None:
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


async def test_a_job_run_by_one_orchestrator_is_watched_and_downloaded_through_the_other(
    site: Site, song: Path
) -> None:
    upload_id = await _upload(site, "a", song)  # uploaded through a, processed by b
    job_id = await _submit(site, "b", upload_id)
    through_a, through_b = await asyncio.wait_for(
        asyncio.gather(_watch(site, "a", job_id), _watch(site, "b", job_id)), 300
    )
    assert through_a[-1].state == pb.JOB_STATE_SUCCEEDED, (through_a[-1], site.tail())
    _assert_each_event_once(through_a)
    assert through_a == through_b  # the same events, live, whichever orchestrator one asks
    assert any(e.stage == pb.STAGE_SEPARATION and 0 < e.stage_percent < 100 for e in through_a)
    files = await _download(site, "a", job_id)
    assert files and all(files.values()) and files == await _download(site, "b", job_id)


async def test_killing_the_orchestrator_running_a_job_hands_it_to_the_other(site: Site, song: Path) -> None:
    upload_id = await _upload(site, "a", song)
    job_id = await _submit(site, "a", upload_id)
    watching = asyncio.create_task(_watch(site, "b", job_id))
    await _mid_stage(site, job_id)
    killed_at = time.time()
    site.kill("a")
    try:
        events = await asyncio.wait_for(watching, 300)
    finally:
        site.start("a")
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED, (events[-1], site.tail())
    _assert_each_event_once(events)  # nothing lost, nothing twice
    taken_over = [e for e in events if e.message == TAKEN_OVER_NOTE]
    assert len(taken_over) == 1, [e.message for e in events]
    waited = taken_over[0].timestamp.ToNanoseconds() / 1e9 - killed_at
    print(f"taken over {waited:.1f} s after the kill (lease {LEASE_SECONDS} s)")
    # The lease runs out at most LEASE_SECONDS after the kill; b looks every third of that.
    assert waited < LEASE_SECONDS * 4 / 3 + 3.0
    resumed = [e.message for e in events if "resuming from window" in e.message]
    assert resumed and not resumed[0].startswith("separation resuming from window 0 "), resumed
    assert await _watch(site, "a", job_id) == events  # the restarted a replays the same
    files = await _download(site, "a", job_id)
    assert files and all(files.values())


@pytest.mark.parametrize("through", ["a", "b"], ids=["the-runner", "the-other"])
async def test_a_job_is_cancelled_through_either_orchestrator(site: Site, song: Path, through: str) -> None:
    upload_id = await _upload(site, "b", song)
    job_id = await _submit(site, "a", upload_id)
    watching = asyncio.create_task(_watch(site, "b", job_id))
    await _mid_stage(site, job_id)
    async with client.channel(site.address(through)) as channel:
        await pb_grpc.OrchestratorStub(channel).CancelJob(pb.CancelJobRequest(job_id=job_id))
    events = await asyncio.wait_for(watching, 60)
    assert events[-1].state == pb.JOB_STATE_CANCELLED, (events[-1], site.tail())
    assert events[-1].message == "cancelled"
    _assert_each_event_once(events)


async def test_a_job_cancelled_while_no_orchestrator_runs_it_ends_cancelled_when_taken_over(
    site: Site, song: Path
) -> None:
    upload_id = await _upload(site, "a", song)
    job_id = await _submit(site, "a", upload_id)
    watching = asyncio.create_task(_watch(site, "b", job_id))
    await _mid_stage(site, job_id)
    site.kill("a")
    try:
        async with client.channel(site.address("b")) as channel:
            job = await pb_grpc.OrchestratorStub(channel).CancelJob(pb.CancelJobRequest(job_id=job_id))
        assert job.state == pb.JOB_STATE_RUNNING  # recorded; nobody runs it until its lease expires
        events = await asyncio.wait_for(watching, 60)
    finally:
        site.start("a")
    assert events[-1].state == pb.JOB_STATE_CANCELLED, (events[-1], site.tail())
    assert TAKEN_OVER_NOTE not in [e.message for e in events]  # ended, not resumed
    _assert_each_event_once(events)


@pytest.mark.parametrize("through", ["a", "b"], ids=["the-runner", "the-other"])
async def test_a_job_paused_through_either_orchestrator_is_resumed_through_the_other(
    site: Site, song: Path, through: str
) -> None:
    upload_id = await _upload(site, "a", song)
    job_id = await _submit(site, "a", upload_id)
    watching = asyncio.create_task(_watch(site, "b", job_id))
    await _mid_stage(site, job_id)
    async with client.channel(site.address(through)) as channel:
        paused = await pb_grpc.OrchestratorStub(channel).PauseJob(pb.PauseJobRequest(job_id=job_id))
    # Through the other one too, it answers once the runner has stopped the job.
    assert paused.state == pb.JOB_STATE_PAUSED, (paused, site.log())
    await asyncio.sleep(LEASE_SECONDS)  # past a lease: nobody takes a paused job over
    other = "b" if through == "a" else "a"
    async with client.channel(site.address(other)) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        assert (await stub.GetJob(pb.GetJobRequest(job_id=job_id))).last_event.seq == paused.last_event.seq
        await stub.ResumeJob(pb.ResumeJobRequest(job_id=job_id))
    events = await asyncio.wait_for(watching, 300)
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED, (events[-1], site.log())
    _assert_each_event_once(events)
    messages = [e.message for e in events]
    assert paused_message(job_id) in messages and RESUMED_NOTE in messages
    assert TAKEN_OVER_NOTE not in messages
