"""Server processes that tests and benchmarks start: stopping one, and Roar's services run as
separate processes on loopback (no `roar up` to restart them)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from roar.service import is_serving

REPO = Path(__file__).resolve().parents[2]
# Seconds a service may take to serve after it starts (loading tiny models on a busy machine).
START_SECONDS = 180
LOG_TAIL_CHARS = 6000


def stop_process(process: subprocess.Popen, grace: float = 30.0) -> int:
    """SIGTERM, then SIGKILL when it has not exited within `grace` seconds; its exit code."""
    process.terminate()
    try:
        return process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def service_env(data_dir: Path, settings: dict[str, str]) -> dict[str, str]:
    """The environment of every service of one deployment: one data dir, one torch thread each
    (the machine has 2 cores), never the hub; `settings` (models, addresses) on top."""
    return {
        **os.environ,
        "ROAR_DATA_DIR": str(data_dir),
        "ROAR_TORCH_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "PYTHONUNBUFFERED": "1",
        **settings,
    }


@dataclass(kw_only=True)
class ServiceProcesses:
    """Services started by name, all logging to one file: a stage is "separation", "karaoke",
    "separation-2" (a replica: its service is the name before the dash) and serves on
    ports[name]; an orchestrator is one of `orchestrators` and serves gRPC on ports[name] and its
    web port on ports[f"{name}-web"]."""

    log_path: Path
    env: dict[str, str]
    ports: dict[str, int]
    orchestrators: tuple[str, ...] = ("orchestrator",)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str) -> None:
        """Starts one process and waits until it serves."""
        if name in self.orchestrators:
            module = "orchestrator.server"
            args = ["--port", str(self.ports[name]), "--web-port", str(self.ports[f"{name}-web"])]
        else:
            module, args = f"services.{name.split('-')[0]}.server", ["--port", str(self.ports[name])]
        with self.log_path.open("ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", module, *args], cwd=REPO, env=self.env, stdout=log, stderr=log
            )
        deadline = time.monotonic() + START_SECONDS
        while not is_serving(self.address(name)):
            assert self.processes[name].poll() is None, self.tail()
            assert time.monotonic() < deadline, f"{name} not serving:\n{self.tail()}"
            time.sleep(0.3)

    @contextmanager
    def serving(self, names: list[str]) -> Iterator[ServiceProcesses]:
        """Starts the services one after another; stops all of them on the way out."""
        try:
            for name in names:
                self.start(name)
            yield self
        finally:
            self.stop_all()

    def kill(self, name: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Sends the signal (SIGKILL: no clean-up) and waits for the process to exit; its exit code."""
        process = self.processes.pop(name)
        process.send_signal(sig)
        return process.wait(90)

    def stop_all(self) -> None:
        for name, process in list(self.processes.items()):
            stop_process(process)
            del self.processes[name]

    def address(self, name: str) -> str:
        return f"127.0.0.1:{self.ports[name]}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self) -> str:
        """The log's end, for a failed assertion's message."""
        return self.log()[-LOG_TAIL_CHARS:]
