"""A real PostgreSQL 15 server for tests: a throwaway cluster in a temp dir, run unprivileged (as
the `postgres` user when the tests run as root, since initdb refuses root), on a free loopback
port, trusting local connections. Tests skip with the reason when the server binaries are absent."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.suite import free_port

# Debian's `postgresql` package puts the server binaries here, off PATH.
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# The superuser initdb creates; trust authentication, so no password.
PG_USER = "roar"


class PostgresServer:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "cluster"
        self.log_path = root / "postgres.log"  # the server writes it: in a folder it owns
        self.port = free_port()

    def _run(self, *command: str) -> None:
        # initdb and pg_ctl refuse to run as root: root hands them to the `postgres` user.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*prefix, *command], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(command[0]).name} failed:\n{done.stdout}\n{done.stderr}\n{self.log()}")

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", PG_USER)
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        pg_ctl = str(PG_BIN / "pg_ctl")
        self._run(pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.log_path), "-w", "start")

    def stop(self) -> None:
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{PG_USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; its URL."""
        import psycopg

        name = f"roar_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""


def running_postgres() -> Iterator[PostgresServer]:
    """A running server for a fixture to yield (stopped and deleted after), or a skip saying what
    is missing."""
    if not (PG_BIN / "initdb").exists():
        pytest.skip(f"needs PostgreSQL 15 server binaries in {PG_BIN} (Debian package `postgresql`)")
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root needs `runuser` to start PostgreSQL as the postgres user")
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root needs the `postgres` user (made by Debian's `postgresql` package)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("needs psycopg (pip install 'psycopg[binary]')")
    # Not under pytest's temp dirs: those are private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="roar-pg-"))
    server = PostgresServer(root)
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(RuntimeError):  # it may never have started
            server.stop()
        shutil.rmtree(root, ignore_errors=True)
