"""Runs the whole suite (`roar up`) as real subprocesses on free loopback ports, for tests."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc

from roar import client
from roar.auth import bearer_metadata
from roar.service import is_serving
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support.processes import stop_process

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Suite:
    """`roar up` with its own data dir and ports; stop() and start() again keep both, like a
    server restart."""

    def __init__(
        self,
        data_dir: Path,
        env: dict[str, str],
        log_path: Path,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        self.data_dir = data_dir
        # TLS (env with ROAR_TLS_CERT): how the health checks verify the servers.
        self.credentials = credentials
        self.port = free_port()
        self.web_port = free_port()
        self.stage_addresses = {
            name: f"127.0.0.1:{free_port()}" for name in ("separation", "transcription", "karaoke")
        }
        self.env = {
            **os.environ,
            "ROAR_DATA_DIR": str(data_dir),
            "ROAR_PORT": str(self.port),
            "ROAR_WEB_PORT": str(self.web_port),
            "ROAR_SEPARATION_ADDR": self.stage_addresses["separation"],
            "ROAR_TRANSCRIPTION_ADDR": self.stage_addresses["transcription"],
            "ROAR_KARAOKE_ADDR": self.stage_addresses["karaoke"],
            "ROAR_TORCH_THREADS": "1",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            **env,
        }
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def web_url(self) -> str:
        scheme = "https" if self.env.get("ROAR_TLS_CERT") else "http"
        return f"{scheme}://127.0.0.1:{self.web_port}"

    def start(self, timeout: float = 180.0) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "roar.cli", "up"], cwd=REPO, env=self.env, stdout=log, stderr=log
        )
        deadline = time.monotonic() + timeout
        addresses = [self.address, *self.stage_addresses.values()]
        while not all(is_serving(a, self.credentials) for a in addresses):
            if self.process.poll() is not None:
                raise RuntimeError(f"roar up exited with {self.process.returncode}:\n{self.log(6000)}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"roar up not healthy after {timeout} s:\n{self.log(6000)}")
            time.sleep(0.3)

    def stop(self) -> int:
        if self.process is None:
            return 0
        code = stop_process(self.process)
        self.process = None
        return code

    def log(self, tail: int | None = None) -> str:
        text = self.log_path.read_text(errors="replace")
        return text[-tail:] if tail else text


async def start_job_until_separating(address: str, song: Path) -> list[pb.ProgressEvent]:
    """Uploads `song`, starts its job and leaves the Process stream once separation has reported
    progress (the job runs on); the events received until then."""
    events = []
    async with client.channel(address) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        upload = await client.upload_file(stub, song)
        async for event in stub.Process(pb.ProcessRequest(upload_id=upload.upload_id)):
            events.append(event)
            if event.stage == pb.STAGE_SEPARATION and event.stage_percent > 0:
                break
    return events


def job_made_through_the_api(suite: Suite, song: Path, key: str = "") -> pb.Job:
    """A finished job made through the gRPC API, never through a browser."""

    async def run() -> str:
        async with client.channel(suite.address, key=key) as channel:
            stub = pb_grpc.OrchestratorStub(channel)
            uploaded = await client.upload_file(stub, song)
            events = [e async for e in client.process(stub, uploaded.upload_id, pb.JobOptions())]
            return events[-1].job_id

    # Playwright's sync API holds this thread's event loop: the asyncio client runs in a thread of its own.
    with ThreadPoolExecutor(1) as pool:
        job_id = pool.submit(asyncio.run, run()).result()
    with grpc.insecure_channel(suite.address) as channel:
        job = pb_grpc.OrchestratorStub(channel).GetJob(
            pb.GetJobRequest(job_id=job_id), metadata=bearer_metadata(key), timeout=10
        )
    assert job.state == pb.JOB_STATE_SUCCEEDED
    return job


def create_key(suite: Suite, name: str, admin: bool = False) -> str:
    """A new API key, made with `roar keys create` while the suite runs."""
    made = subprocess.run(
        [sys.executable, "-m", "roar.cli", "keys", "create", "--name", name, *(["--admin"] if admin else [])],
        cwd=REPO,
        env=suite.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    return made.stdout.strip()


def downloaded(suite: Suite, job_id: str, name: str, key: str = "") -> bytes:
    """A job's file as the Download RPC sends it."""
    with grpc.insecure_channel(suite.address) as channel:
        chunks = pb_grpc.OrchestratorStub(channel).Download(
            pb.DownloadRequest(job_id=job_id, name=name), metadata=bearer_metadata(key), timeout=60
        )
        return b"".join(chunk.data for chunk in chunks)
