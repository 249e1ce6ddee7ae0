"""The job store: uploads, jobs and every progress event (so WatchJob can replay), which stages
of each unfinished job are done (with their small outputs) and the checkpoints of the running
ones (separation's windows, transcription's passages), the finished stage runs the ETA is
estimated from, and the API keys.

Two databases behind one class: the embedded SQLite file in ROAR_DATA_DIR (the default; one
orchestrator; `roar keys` opens the same file from another process while the server runs, WAL),
or PostgreSQL (ROAR_DATABASE_URL), which several orchestrators share. Either way one connection,
used synchronously from the event loop thread: every statement is short and every write a short
transaction. The SQL is written once, for both: `?` placeholders (translated for psycopg),
ON CONFLICT upserts, INTEGER/REAL/TEXT/BLOB columns (widened for PostgreSQL). On PostgreSQL each
stored event is also announced (NOTIFY) to the other orchestrators, in the same transaction, and a
job is run by the orchestrator holding its lease (lease_owner until lease_until)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from roar.config import POSTGRES_SCHEMES
from roar.errors import Unavailable
from roar.v1 import orchestrator_pb2 as pb

log = logging.getLogger("roar.orchestrator")

# The store's file in ROAR_DATA_DIR.
STORE_FILE = "roar.sqlite"
# PostgreSQL NOTIFY channels: a job's new event(s), and a cancel or a pause asked through an
# orchestrator that does not run the job; the payload is the job id.
EVENTS_CHANNEL = "roar_events"
CANCELS_CHANNEL = "roar_cancels"
PAUSES_CHANNEL = "roar_pauses"
# The longest a PostgreSQL statement waits for a lock, and a session may sit in a transaction.
LOCK_WAIT_MS = 10_000
# Seconds between attempts to reconnect the LISTEN connection.
LISTEN_RETRY_SECONDS = 1.0
TERMINAL_STATES = frozenset(
    {pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_PARTIAL, pb.JOB_STATE_FAILED, pb.JOB_STATE_CANCELLED}
)
# States in which no orchestrator runs a job, nor resumes or takes it over: the ended ones, and
# PAUSED (until ResumeJob), which is not an end: WatchJob stays open through it.
IDLE_STATES = TERMINAL_STATES | {pb.JOB_STATE_PAUSED}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS uploads (
    upload_id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    size INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    committed INTEGER NOT NULL DEFAULT 0,
    audio BLOB,
    created REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    upload_id TEXT NOT NULL,
    job BLOB NOT NULL,
    state INTEGER NOT NULL,
    created REAL NOT NULL,
    owner TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS jobs_by_created ON jobs (created DESC);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    event BLOB NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS stages_done (
    job_id TEXT NOT NULL,
    stage INTEGER NOT NULL,
    output BLOB,
    PRIMARY KEY (job_id, stage)
);
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL,
    stage INTEGER NOT NULL,
    layout BLOB NOT NULL,
    windows_done INTEGER NOT NULL,
    frames_done INTEGER NOT NULL,
    PRIMARY KEY (job_id, stage)
);
-- The transcription's checkpoint: the passages received so far (serialized Passages), in order.
CREATE TABLE IF NOT EXISTS passages (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    passage BLOB NOT NULL,
    PRIMARY KEY (job_id, idx)
);
-- One learned speed per stage, replaced by stage_runs (speeds per kind of work, from a median).
DROP TABLE IF EXISTS stage_speed;
CREATE TABLE IF NOT EXISTS stage_runs (
    stage INTEGER NOT NULL,
    kind TEXT NOT NULL,
    audio_seconds REAL NOT NULL,
    seconds REAL NOT NULL,
    finished_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS stage_runs_by_kind ON stage_runs (stage, kind, finished_at DESC);
CREATE TABLE IF NOT EXISTS keys (
    key_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    secret_sha256 TEXT NOT NULL,
    admin INTEGER NOT NULL,
    created REAL NOT NULL,
    revoked REAL
);
-- How each stage run of a job ended (GetStats, orchestrator/stats.py): code "OK" or the stage's
-- gRPC status name; `owner` is the job's, so that a caller's figures need no join.
CREATE TABLE IF NOT EXISTS stage_results (
    job_id TEXT NOT NULL,
    owner TEXT NOT NULL,
    stage INTEGER NOT NULL,
    code TEXT NOT NULL,
    seconds REAL NOT NULL,
    audio_seconds REAL NOT NULL,
    ended_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS stage_results_by_end ON stage_results (ended_at);
CREATE INDEX IF NOT EXISTS stage_results_by_owner ON stage_results (owner, ended_at);
"""
# Owner: the id of the API key that made an upload or job; '' is the anonymous caller (no key).
_OWNER_COLUMNS = ("uploads", "jobs")
_OWNER_INDEX = "CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, created DESC)"


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    secret_sha256: str
    admin: bool
    created: float
    revoked: float | None


@dataclass(frozen=True)
class Checkpoint:
    """How far a windowed stage got: `layout` is what the stage said the windows hold (a
    serialized SeparationResult), and windows [0, windows_done), frames [0, frames_done) of every
    stem, are in the job's checkpoint files."""

    layout: bytes
    windows_done: int
    frames_done: int


class StageResult(NamedTuple):
    """How one stage run of a job ended."""

    stage: int
    code: str  # the gRPC status name: OK (roar.metrics.OK) when it succeeded
    seconds: float
    audio_seconds: float
    ended_at: float


def is_postgres_url(location: Path | str) -> bool:
    return isinstance(location, str) and location.startswith(POSTGRES_SCHEMES)


def store_location(database_url: str, data_dir: Path) -> Path | str:
    """Where the store is: ROAR_DATABASE_URL when set, else the SQLite file in the data dir."""
    return database_url or data_dir / STORE_FILE


# SQLite column types as PostgreSQL spells them: 64-bit integers, double precision (PostgreSQL's
# REAL is single precision: seconds since 1970 would lose minutes), bytea.
_POSTGRES_TYPES = {"INTEGER": "BIGINT", "REAL": "DOUBLE PRECISION", "BLOB": "BYTEA"}
_TYPE_WORDS = re.compile(r"\b(" + "|".join(_POSTGRES_TYPES) + r")\b")
# Held while a PostgreSQL store creates or migrates its tables: orchestrators starting together
# would otherwise race on CREATE TABLE IF NOT EXISTS.
_SCHEMA_LOCK = 0x524F4152  # "ROAR"


class _Postgres:
    """A psycopg connection with sqlite3's execute(): `?` placeholders, a cursor back (fetchone,
    fetchall, iteration, rowcount). Autocommit, like the SQLite connection: transactions are
    explicit."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._connection = self._connect()

    def _connect(self) -> Any:
        import psycopg

        connection = psycopg.connect(self.url, autocommit=True)
        # An orchestrator whose machine died mid-transaction would hold its row locks until TCP
        # gave up: the server ends such a session, and no statement here waits on a lock for ever.
        connection.execute(f"SET idle_in_transaction_session_timeout = {LOCK_WAIT_MS}")
        connection.execute(f"SET lock_timeout = {LOCK_WAIT_MS}")
        return connection

    def execute(self, sql: str, parameters: tuple[Any, ...] | None = None) -> Any:
        with self._answering():
            if parameters is None:
                return self._connection.execute(sql)
            return self._connection.execute(sql.replace("%", "%%").replace("?", "%s"), parameters)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._answering(), self._connection.transaction():
            yield

    @contextlib.contextmanager
    def _answering(self) -> Iterator[None]:
        """Reconnects a connection that broke (the server restarted: the call that found out
        failed); a database that does not answer is UNAVAILABLE to the caller, who may retry."""
        import psycopg

        try:
            if self._connection.broken:
                self._connection = self._connect()
            yield
        except psycopg.OperationalError as exc:
            log.warning("the PostgreSQL store does not answer: %s", exc)
            raise Unavailable("the job store (PostgreSQL) does not answer; try again shortly") from exc

    def columns(self, table: str) -> set[str]:
        rows = self.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )
        return {row[0] for row in rows}

    def close(self) -> None:
        self._connection.close()


async def listen(url: str, on_notify: Callable[[str, str], None]) -> None:
    """Calls on_notify(channel, job_id) for every event and cancel any orchestrator announces
    on the PostgreSQL store, until cancelled; reconnects when the connection breaks (watchers
    poll meanwhile, see events.py). An asyncio connection: it only waits, never blocks the loop."""
    import psycopg

    while True:
        try:
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as connection:
                await connection.execute(f"LISTEN {EVENTS_CHANNEL}")
                await connection.execute(f"LISTEN {CANCELS_CHANNEL}")
                await connection.execute(f"LISTEN {PAUSES_CHANNEL}")
                async for notice in connection.notifies():
                    on_notify(notice.channel, notice.payload)
        except Exception as exc:  # the server restarted, the network broke: listen again
            log.warning("listening for other orchestrators' events failed (%s); reconnecting", exc)
            await asyncio.sleep(LISTEN_RETRY_SECONDS)


class Store:
    def __init__(self, location: Path | str) -> None:
        """`location`: the SQLite file, or a postgresql:// URL (store_location)."""
        self._db: Any
        self._postgres: _Postgres | None = None
        if is_postgres_url(location):
            assert isinstance(location, str)
            self._db = self._postgres = _Postgres(location)
            with self._postgres.transaction():
                self._db.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
                self._db.execute(_TYPE_WORDS.sub(lambda m: _POSTGRES_TYPES[m[1]], _SCHEMA))
                self._migrate()
        else:
            path = Path(location)
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._migrate()

    @property
    def shared(self) -> bool:
        """Whether several orchestrators may use this store at once (PostgreSQL)."""
        return self._postgres is not None

    @property
    def database_url(self) -> str:
        """The PostgreSQL store's URL ('' for SQLite): what a LISTEN connection connects to."""
        return self._postgres.url if self._postgres else ""

    def _migrate(self) -> None:
        for table in _OWNER_COLUMNS:  # stores made before API keys have no owner column yet
            self._add_column(table, "owner", "TEXT NOT NULL DEFAULT ''")
        self._db.execute(_OWNER_INDEX)
        self._add_column("jobs", "files_deleted", "REAL")
        # Which orchestrator runs the job, until when (seconds since 1970), and a cancel asked
        # through another orchestrator (PostgreSQL).
        self._add_column("jobs", "lease_owner", "TEXT")
        self._add_column("jobs", "lease_until", "REAL")
        self._add_column("jobs", "cancel_requested", "INTEGER NOT NULL DEFAULT 0")
        self._add_column("jobs", "pause_requested", "INTEGER NOT NULL DEFAULT 0")
        # When the job's time limit started counting, when not at its creation: its last resume
        # or retry (seconds since 1970).
        self._add_column("jobs", "clock_start", "REAL")

    def _add_column(self, table: str, column: str, declaration: str) -> None:
        """Adds a column that stores made before it existed lack."""
        if self._postgres is not None:
            columns = self._postgres.columns(table)
            declaration = _TYPE_WORDS.sub(lambda m: _POSTGRES_TYPES[m[1]], declaration)
        else:
            columns = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            self._db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """Statements that land together or not at all (a crash before COMMIT leaves none)."""
        if self._postgres is not None:
            with self._postgres.transaction():
                yield
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _notify(self, channel: str, job_id: str) -> None:
        """Tells every orchestrator listening (PostgreSQL; delivered when the transaction
        commits, so a listener that reads then sees what was announced)."""
        if self._postgres is not None:
            self._db.execute("SELECT pg_notify(?, ?)", (channel, job_id))

    # Uploads.

    def add_upload(self, upload: pb.Upload, content_type: str, owner: str = "") -> None:
        self._db.execute(
            "INSERT INTO uploads (upload_id, filename, size, content_type, created, owner) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (upload.upload_id, upload.filename, upload.size, content_type, time.time(), owner),
        )

    def upload_owner(self, upload_id: str) -> str | None:
        row = self._db.execute("SELECT owner FROM uploads WHERE upload_id = ?", (upload_id,)).fetchone()
        return None if row is None else row[0]

    def get_upload(self, upload_id: str) -> pb.Upload | None:
        row = self._db.execute(
            "SELECT filename, size, committed, audio FROM uploads WHERE upload_id = ?", (upload_id,)
        ).fetchone()
        if row is None:
            return None
        filename, size, committed, audio = row
        upload = pb.Upload(upload_id=upload_id, filename=filename, size=size, committed=committed)
        if audio is not None:
            upload.finished = True
            upload.audio.ParseFromString(audio)
        return upload

    def set_committed(self, upload_id: str, committed: int) -> None:
        self._db.execute("UPDATE uploads SET committed = ? WHERE upload_id = ?", (committed, upload_id))

    def finish_upload(self, upload_id: str, audio: pb.AudioInfo) -> None:
        self._db.execute(
            "UPDATE uploads SET audio = ? WHERE upload_id = ?", (audio.SerializeToString(), upload_id)
        )

    def upload_ids(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT upload_id FROM uploads")}

    def expirable_uploads(self, created_before: float) -> list[str]:
        """Uploads created before the time that no unfinished job still needs."""
        marks = ",".join("?" * len(TERMINAL_STATES))
        rows = self._db.execute(
            "SELECT upload_id FROM uploads AS u WHERE created < ? AND NOT EXISTS ("
            f"SELECT 1 FROM jobs AS j WHERE j.upload_id = u.upload_id AND j.state NOT IN ({marks}))",
            (created_before, *TERMINAL_STATES),
        )
        return [row[0] for row in rows]

    def delete_upload(self, upload_id: str) -> None:
        self._db.execute("DELETE FROM uploads WHERE upload_id = ?", (upload_id,))

    # Jobs.

    def put_job(self, upload_id: str, job: pb.Job, owner: str = "") -> None:
        """Adds or updates a job; `owner` is set when it is added and kept after."""
        # To the nanosecond: jobs made within one second still list newest first.
        created = job.created.ToNanoseconds() / 1e9
        self._db.execute(
            "INSERT INTO jobs (job_id, upload_id, job, state, created, owner) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (job_id) DO UPDATE SET job = excluded.job, state = excluded.state",
            (job.job_id, upload_id, job.SerializeToString(), job.state, created, owner),
        )

    def job_owner(self, job_id: str) -> str | None:
        row = self._db.execute("SELECT owner FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else row[0]

    def get_job(self, job_id: str) -> pb.Job | None:
        row = self._db.execute("SELECT job FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else pb.Job.FromString(row[0])

    def upload_of(self, job_id: str) -> str:
        return self._db.execute("SELECT upload_id FROM jobs WHERE job_id = ?", (job_id,)).fetchone()[0]

    def list_jobs(self, limit: int, offset: int, owner: str | None = None) -> list[pb.Job]:
        """Newest first: every job, or only `owner`'s."""
        if owner is None:
            rows = self._db.execute(
                "SELECT job FROM jobs ORDER BY created DESC, job_id LIMIT ? OFFSET ?", (limit, offset)
            )
        else:
            rows = self._db.execute(
                "SELECT job FROM jobs WHERE owner = ? ORDER BY created DESC, job_id LIMIT ? OFFSET ?",
                (owner, limit, offset),
            )
        return [pb.Job.FromString(row[0]) for row in rows]

    def jobs_ended_before(self, ended_before: float) -> list[pb.Job]:
        """Finished jobs whose last event is older than the time and whose files are still kept."""
        marks = ",".join("?" * len(TERMINAL_STATES))
        # A job ends after it was created: `created` narrows the rows before any is decoded.
        rows = self._db.execute(
            f"SELECT job FROM jobs WHERE state IN ({marks}) AND files_deleted IS NULL AND created < ?",
            (*TERMINAL_STATES, ended_before),
        )
        jobs = (pb.Job.FromString(row[0]) for row in rows)
        return [job for job in jobs if job.updated.ToSeconds() < ended_before]

    def mark_files_deleted(self, job: pb.Job, when: float) -> None:
        """Records that a job's files are gone: the row keeps its state and events, without
        artifacts."""
        del job.artifacts[:]
        with self._transaction():
            self._db.execute(
                "UPDATE jobs SET job = ?, files_deleted = ? WHERE job_id = ?",
                (job.SerializeToString(), when, job.job_id),
            )
            # A job that did not succeed kept its stages' records for RetryJob; its files are gone.
            self._forget_stages(job.job_id)

    def files_deleted(self, job_id: str) -> bool:
        row = self._db.execute("SELECT files_deleted FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return row is not None and row[0] is not None

    def unfinished_jobs(self) -> list[pb.Job]:
        """The jobs to resume at start-up: neither ended nor paused."""
        marks = ",".join("?" * len(IDLE_STATES))
        rows = self._db.execute(
            f"SELECT job FROM jobs WHERE state NOT IN ({marks}) ORDER BY created", tuple(IDLE_STATES)
        )
        return [pb.Job.FromString(row[0]) for row in rows]

    def count_jobs(self, state: int) -> int:
        return self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = ?", (state,)).fetchone()[0]

    # Events.

    def record(self, event: pb.ProgressEvent, job: pb.Job) -> None:
        """Stores a job's next event and its job row, in one transaction. The event's seq is set
        here, one past the last stored event, so it never depends on a row that may be stale."""
        with self._transaction():
            if self._postgres is not None:
                # Two orchestrators may write one job's events (one taking over from the other):
                # the job row's lock makes them take turns, so each seq is one past the last.
                self._db.execute("SELECT 1 FROM jobs WHERE job_id = ? FOR UPDATE", (event.job_id,))
            event.seq = self.last_seq(event.job_id) + 1
            self._db.execute(
                "INSERT INTO events (job_id, seq, event) VALUES (?, ?, ?)",
                (event.job_id, event.seq, event.SerializeToString()),
            )
            job.last_event.CopyFrom(event)
            job.updated.CopyFrom(event.timestamp)
            updated = self._db.execute(
                "UPDATE jobs SET job = ?, state = ? WHERE job_id = ?",
                (job.SerializeToString(), job.state, job.job_id),
            )
            if updated.rowcount != 1:
                raise LookupError(f"no job row for job {job.job_id}")
            self._notify(EVENTS_CHANNEL, job.job_id)

    def reconcile(self, job: pb.Job) -> bool:
        """Brings a job row up to its last stored event (a database written before events and
        rows were stored together may hold an event its row never saw); True when it changed."""
        last = self.events_after(job.job_id, self.last_seq(job.job_id) - 1)
        if not last or last[0].seq == job.last_event.seq:
            return False
        event = last[0]
        job.last_event.CopyFrom(event)
        job.updated.CopyFrom(event.timestamp)
        job.state = event.state
        if event.state in TERMINAL_STATES:
            del job.artifacts[:], job.errors[:]
            job.artifacts.extend(event.artifacts)
            job.errors.extend(event.errors)
        self._db.execute(
            "UPDATE jobs SET job = ?, state = ? WHERE job_id = ?",
            (job.SerializeToString(), job.state, job.job_id),
        )
        return True

    def events_after(self, job_id: str, after_seq: int) -> list[pb.ProgressEvent]:
        rows = self._db.execute(
            "SELECT event FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, after_seq)
        )
        return [pb.ProgressEvent.FromString(row[0]) for row in rows]

    def last_seq(self, job_id: str) -> int:
        row = self._db.execute("SELECT MAX(seq) FROM events WHERE job_id = ?", (job_id,)).fetchone()
        return row[0] or 0

    # Leases (PostgreSQL): one orchestrator runs a job at a time, the one holding its lease.

    def _now(self) -> float:
        """Seconds since 1970 by the database's clock: every orchestrator's leases are timed by
        the same clock, whatever their machines' clocks say."""
        if self._postgres is None:
            return time.time()
        return self._db.execute(
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) AS DOUBLE PRECISION)"
        ).fetchone()[0]

    def take_lease(self, job_id: str, owner: str, seconds: float) -> bool:
        """Takes the job's lease for `seconds` when it is free, expired or already `owner`'s;
        False when another orchestrator holds it (or the job ended, or is paused)."""
        now = self._now()
        marks = ",".join("?" * len(IDLE_STATES))
        taken = self._db.execute(
            "UPDATE jobs SET lease_owner = ?, lease_until = ? WHERE job_id = ? "
            "AND (lease_owner IS NULL OR lease_owner = ? OR lease_until < ?) "
            f"AND state NOT IN ({marks})",
            (owner, now + seconds, job_id, owner, now, *IDLE_STATES),
        )
        return taken.rowcount == 1

    def renew_lease(self, job_id: str, owner: str, seconds: float) -> bool:
        """Extends `owner`'s lease; False when it is no longer theirs (it expired and another
        orchestrator took the job over)."""
        renewed = self._db.execute(
            "UPDATE jobs SET lease_until = ? WHERE job_id = ? AND lease_owner = ?",
            (self._now() + seconds, job_id, owner),
        )
        return renewed.rowcount == 1

    def drop_lease(self, job_id: str, owner: str) -> None:
        """Frees the job for any orchestrator (when `owner` holds it)."""
        self._db.execute(
            "UPDATE jobs SET lease_owner = NULL, lease_until = NULL WHERE job_id = ? AND lease_owner = ?",
            (job_id, owner),
        )

    def leasable_jobs(self) -> list[pb.Job]:
        """Unfinished, unpaused jobs no orchestrator holds: never leased, dropped, or whose lease
        expired (its orchestrator died), oldest first."""
        marks = ",".join("?" * len(IDLE_STATES))
        rows = self._db.execute(
            f"SELECT job FROM jobs WHERE state NOT IN ({marks}) "
            "AND (lease_owner IS NULL OR lease_until < ?) ORDER BY created",
            (*IDLE_STATES, self._now()),
        )
        return [pb.Job.FromString(row[0]) for row in rows]

    # A cancel or a pause asked through an orchestrator that does not run the job: recorded for
    # whichever orchestrator runs (or next takes) it, and announced to them.

    def request_cancel(self, job_id: str) -> None:
        self._request(job_id, "cancel_requested", CANCELS_CHANNEL)

    def cancel_requested(self, job_id: str) -> bool:
        return self._requested(job_id, "cancel_requested")

    def request_pause(self, job_id: str) -> None:
        self._request(job_id, "pause_requested", PAUSES_CHANNEL)

    def pause_requested(self, job_id: str) -> bool:
        return self._requested(job_id, "pause_requested")

    def _request(self, job_id: str, column: str, channel: str) -> None:
        with self._transaction():
            self._db.execute(f"UPDATE jobs SET {column} = 1 WHERE job_id = ?", (job_id,))
            self._notify(channel, job_id)

    def _requested(self, job_id: str, column: str) -> bool:
        row = self._db.execute(f"SELECT {column} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return row is not None and bool(row[0])

    def restart_clock(self, job_id: str) -> None:
        self._db.execute("UPDATE jobs SET clock_start = ? WHERE job_id = ?", (time.time(), job_id))

    def clock_start(self, job_id: str) -> float | None:
        """When the job's time limit started counting, if not at its creation."""
        row = self._db.execute("SELECT clock_start FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else row[0]

    def clear_requests(self, job_id: str) -> None:
        """Forgets a cancel or pause asked before: the job runs again (ResumeJob, RetryJob)."""
        self._db.execute(
            "UPDATE jobs SET cancel_requested = 0, pause_requested = 0 WHERE job_id = ?", (job_id,)
        )

    # Stages done and checkpoints: what a resumed job or a retried stage call goes on from.

    def stages_done(self, job_id: str) -> dict[int, bytes | None]:
        """Each finished stage of the job -> the output it stored (None: its files hold it)."""
        return dict(self._db.execute("SELECT stage, output FROM stages_done WHERE job_id = ?", (job_id,)))

    def finish_stage(self, job_id: str, stage: int, output: bytes | None = None) -> None:
        """Records a stage as done, and drops its checkpoint, in one transaction."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO stages_done (job_id, stage, output) VALUES (?, ?, ?) "
                "ON CONFLICT (job_id, stage) DO UPDATE SET output = excluded.output",
                (job_id, stage, output),
            )
            self._db.execute("DELETE FROM checkpoints WHERE job_id = ? AND stage = ?", (job_id, stage))
            if stage == pb.STAGE_TRANSCRIPTION:
                self._db.execute("DELETE FROM passages WHERE job_id = ?", (job_id,))

    def checkpoint(self, job_id: str, stage: int) -> Checkpoint | None:
        row = self._db.execute(
            "SELECT layout, windows_done, frames_done FROM checkpoints WHERE job_id = ? AND stage = ?",
            (job_id, stage),
        ).fetchone()
        return None if row is None else Checkpoint(*row)

    def set_checkpoint(self, job_id: str, stage: int, checkpoint: Checkpoint) -> None:
        self._db.execute(
            "INSERT INTO checkpoints (job_id, stage, layout, windows_done, frames_done) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_id, stage) DO UPDATE SET layout = excluded.layout, "
            "windows_done = excluded.windows_done, frames_done = excluded.frames_done",
            (job_id, stage, checkpoint.layout, checkpoint.windows_done, checkpoint.frames_done),
        )

    def drop_checkpoint(self, job_id: str, stage: int) -> None:
        self._db.execute("DELETE FROM checkpoints WHERE job_id = ? AND stage = ?", (job_id, stage))

    def forget_stages(self, job_id: str) -> None:
        """A job that succeeded needs neither its stages' records nor its checkpoints."""
        with self._transaction():
            self._forget_stages(job_id)

    def _forget_stages(self, job_id: str) -> None:
        self._db.execute("DELETE FROM stages_done WHERE job_id = ?", (job_id,))
        self._forget_checkpoints(job_id)

    def forget_checkpoints(self, job_id: str) -> None:
        """A job that ended otherwise keeps which stages succeeded (RetryJob reruns the others),
        not the checkpoints of those that did not (their files are gone with the job's scratch)."""
        with self._transaction():
            self._forget_checkpoints(job_id)

    def _forget_checkpoints(self, job_id: str) -> None:
        self._db.execute("DELETE FROM checkpoints WHERE job_id = ?", (job_id,))
        self._db.execute("DELETE FROM passages WHERE job_id = ?", (job_id,))

    def undo_stages(self, job_id: str, stages: set[int]) -> None:
        """Drops the records of stages that ran but must run again (a retry of stages that
        failed after being recorded, like karaoke whose video failed)."""
        for stage in stages:
            self._db.execute("DELETE FROM stages_done WHERE job_id = ? AND stage = ?", (job_id, stage))

    def passages(self, job_id: str) -> list[bytes]:
        """The transcription's committed passages (serialized), in order."""
        rows = self._db.execute("SELECT passage FROM passages WHERE job_id = ? ORDER BY idx", (job_id,))
        return [row[0] for row in rows]

    def add_passage(self, job_id: str, index: int, passage: bytes) -> None:
        self._db.execute(
            "INSERT INTO passages (job_id, idx, passage) VALUES (?, ?, ?) "
            "ON CONFLICT (job_id, idx) DO UPDATE SET passage = excluded.passage",
            (job_id, index, passage),
        )

    # API keys: only the sha256 of each secret is kept.

    def add_key(self, key_id: str, name: str, secret_sha256: str, admin: bool) -> None:
        self._db.execute(
            "INSERT INTO keys (key_id, name, secret_sha256, admin, created) VALUES (?, ?, ?, ?, ?)",
            (key_id, name, secret_sha256, int(admin), time.time()),
        )

    def get_key(self, key_id: str) -> ApiKey | None:
        row = self._db.execute(
            "SELECT key_id, name, secret_sha256, admin, created, revoked FROM keys WHERE key_id = ?",
            (key_id,),
        ).fetchone()
        return None if row is None else ApiKey(*row[:3], bool(row[3]), *row[4:])

    def list_keys(self) -> list[ApiKey]:
        rows = self._db.execute(
            "SELECT key_id, name, secret_sha256, admin, created, revoked FROM keys ORDER BY created"
        )
        return [ApiKey(*row[:3], bool(row[3]), *row[4:]) for row in rows]

    def revoke_key(self, key_id: str) -> bool:
        """Revokes a key; False when there is no such key or it was already revoked."""
        cursor = self._db.execute(
            "UPDATE keys SET revoked = ? WHERE key_id = ? AND revoked IS NULL", (time.time(), key_id)
        )
        return cursor.rowcount == 1

    def has_active_keys(self) -> bool:
        return self._db.execute("SELECT 1 FROM keys WHERE revoked IS NULL LIMIT 1").fetchone() is not None

    # Finished stage runs: what the ETA learns stage speeds from (orchestrator.progress).

    def add_stage_run(self, stage: int, kind: str, audio_seconds: float, seconds: float, keep: int) -> None:
        """Records a finished stage run; only the newest `keep` runs of each (stage, kind) stay."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO stage_runs (stage, kind, audio_seconds, seconds, finished_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (stage, kind, audio_seconds, seconds, time.time()),
            )
            # Older than the keep-th newest (none when there are fewer).
            self._db.execute(
                "DELETE FROM stage_runs WHERE stage = ? AND kind = ? AND finished_at < ("
                "SELECT finished_at FROM stage_runs WHERE stage = ? AND kind = ? "
                "ORDER BY finished_at DESC LIMIT 1 OFFSET ?)",
                (stage, kind, stage, kind, keep - 1),
            )

    def stage_runs(self) -> list[tuple[int, str, float, float]]:
        """(stage, kind, audio_seconds, seconds) of the kept runs, newest first."""
        rows = self._db.execute(
            "SELECT stage, kind, audio_seconds, seconds FROM stage_runs ORDER BY finished_at DESC"
        )
        return [tuple(row) for row in rows]

    # Stage results and jobs by time: what GetStats counts (orchestrator/stats.py).

    def add_stage_result(
        self, job_id: str, stage: int, code: str, seconds: float, audio_seconds: float, ended_at: float
    ) -> None:
        """Records how a stage run of the job ended (the job's owner with it)."""
        self._db.execute(
            "INSERT INTO stage_results (job_id, owner, stage, code, seconds, audio_seconds, ended_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (job_id, self.job_owner(job_id) or "", stage, code, seconds, audio_seconds, ended_at),
        )

    def stage_results_between(self, start: float, end: float, owner: str | None = None) -> list[StageResult]:
        """The stage runs that ended in [start, end): every caller's, or only `owner`'s jobs'."""
        query = (
            "SELECT stage, code, seconds, audio_seconds, ended_at FROM stage_results "
            "WHERE ended_at >= ? AND ended_at < ?"
        )
        if owner is None:
            rows = self._db.execute(query, (start, end))
        else:
            rows = self._db.execute(query + " AND owner = ?", (start, end, owner))
        return [StageResult._make(row) for row in rows]

    def jobs_created_between(self, start: float, end: float, owner: str | None = None) -> list[pb.Job]:
        """The jobs created in [start, end), newest first: every caller's, or only `owner`'s."""
        if owner is None:
            rows = self._db.execute(
                "SELECT job FROM jobs WHERE created >= ? AND created < ? ORDER BY created DESC, job_id",
                (start, end),
            )
        else:
            rows = self._db.execute(
                "SELECT job FROM jobs WHERE owner = ? AND created >= ? AND created < ? "
                "ORDER BY created DESC, job_id",
                (owner, start, end),
            )
        return [pb.Job.FromString(row[0]) for row in rows]
