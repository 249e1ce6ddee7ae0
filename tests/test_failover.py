"""Failover with real services: two separation and two transcription replicas on loopback behind
one target each (`ipv4:127.0.0.1:P1,127.0.0.1:P2`, round_robin), tiny random Demucs and Whisper.
The busy separation replica killed with SIGKILL mid-stage, stopped with SIGTERM mid-stage, or the
orchestrator killed with SIGKILL mid-stage and started again on its data dir: the job succeeds,
its stems (and words) equal an uninterrupted run's bit for bit, and no window committed before the
kill is asked for again (the one window under way at a SIGKILL is the only work redone).
Transcription streams the vocals alongside: it reads only committed windows, so a broken
separation call does not change its words."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from roar import client
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support.processes import ServiceProcesses, service_env
from tests.support.prometheus import scraped_value
from tests.support.songs import write_song
from tests.support.suite import free_port

# Long enough for many windows of the tiny Demucs, so a kill lands mid-stage.
SONG_SECONDS = 60.0
RESULT_FILES = ("vocals.wav", "instrumental.wav", "words.json")
RESUMED = re.compile(r"resuming from window (\d+) of (\d+)")


@dataclass(kw_only=True)
class Cluster(ServiceProcesses):
    """The services as separate processes: two replicas of each of separation and transcription,
    karaoke and the orchestrator."""

    data_dir: Path

    def windows_done(self) -> int:
        """The separation windows committed for the running job (-1 before any)."""
        with sqlite3.connect(f"file:{self.data_dir / 'roar.sqlite'}?mode=ro", uri=True) as db:
            row = db.execute("SELECT MAX(windows_done) FROM checkpoints").fetchone()
        return -1 if row is None or row[0] is None else row[0]

    def busy(self, names: list[str]) -> str:
        """Of the replicas, the one using the CPU now (the one working on the job's call)."""

        def cpu(name: str) -> int:
            fields = Path(f"/proc/{self.processes[name].pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])  # utime + stime

        before = {name: cpu(name) for name in names}
        time.sleep(0.4)
        return max(names, key=lambda name: cpu(name) - before[name])


SERVICES = ["separation-1", "separation-2", "transcription-1", "transcription-2", "karaoke"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, str]) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("failover")
    ports = {name: free_port() for name in [*SERVICES, "orchestrator", "orchestrator-web"]}

    def target(stage: str) -> str:
        return "ipv4:" + ",".join(f"127.0.0.1:{ports[f'{stage}-{k}']}" for k in (1, 2))

    env = service_env(
        root / "data",
        {
            **tiny_models,
            "ROAR_SEPARATION_ADDR": target("separation"),
            "ROAR_TRANSCRIPTION_ADDR": target("transcription"),
            "ROAR_KARAOKE_ADDR": f"127.0.0.1:{ports['karaoke']}",
        },
    )
    running = Cluster(data_dir=root / "data", log_path=root / "services.log", env=env, ports=ports)
    with running.serving([*SERVICES, "orchestrator"]):
        yield running


@pytest.fixture(scope="module")
def song(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_song(tmp_path_factory.mktemp("song") / "song.wav", SONG_SECONDS)


async def _results(stub: pb_grpc.OrchestratorStub, job_id: str) -> dict[str, bytes]:
    files = {}
    for name in RESULT_FILES:
        chunks = stub.Download(pb.DownloadRequest(job_id=job_id, name=name))
        files[name] = b"".join([chunk.data async for chunk in chunks])
    return files


@pytest.fixture(scope="module")
async def uninterrupted(cluster: Cluster, song: Path) -> dict[str, bytes]:
    async with client.channel(cluster.address("orchestrator")) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        upload = await client.upload_file(stub, song)
        events = [e async for e in client.process(stub, upload.upload_id, pb.JobOptions())]
        assert events[-1].state == pb.JOB_STATE_SUCCEEDED, cluster.tail()
        assert not any("retrying" in e.message or "resuming" in e.message for e in events)
        return await _results(stub, events[-1].job_id)


async def _start_job(cluster: Cluster, song: Path) -> str:
    async with client.channel(cluster.address("orchestrator")) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        upload = await client.upload_file(stub, song)
        process = stub.Process(pb.ProcessRequest(upload_id=upload.upload_id))
        first = await process.read()
        process.cancel()  # the job runs on without a watcher
        return first.job_id


async def _mid_stage(cluster: Cluster) -> int:
    """Waits until some windows are committed and more are to come; the count committed."""
    deadline = time.monotonic() + 120
    while (done := cluster.windows_done()) < 1:
        assert time.monotonic() < deadline, cluster.tail()
        await asyncio.sleep(0.02)
    return done


async def _finish(cluster: Cluster, job_id: str) -> tuple[list[pb.ProgressEvent], dict[str, bytes]]:
    async with client.channel(cluster.address("orchestrator")) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        watch = stub.WatchJob(pb.WatchJobRequest(job_id=job_id))
        events = await asyncio.wait_for(_collect(watch), 300)
        assert events[-1].state == pb.JOB_STATE_SUCCEEDED, (events[-1], cluster.tail())
        return events, await _results(stub, job_id)


async def _collect(events) -> list[pb.ProgressEvent]:
    return [e async for e in events]


def _resumed_from(events: list[pb.ProgressEvent]) -> list[tuple[int, int]]:
    found = [RESUMED.search(e.message) for e in events if e.stage == pb.STAGE_SEPARATION]
    return [(int(m[1]), int(m[2])) for m in found if m]


async def test_killing_the_busy_separation_replica_fails_over_to_the_other(
    cluster: Cluster, song: Path, uninterrupted: dict[str, bytes]
) -> None:
    job_id = await _start_job(cluster, song)
    await _mid_stage(cluster)
    victim = cluster.busy(["separation-1", "separation-2"])
    committed = cluster.windows_done()
    cluster.kill(victim)
    try:
        events, results = await _finish(cluster, job_id)
    finally:
        cluster.start(victim)
    # Every retry (one, or more while the channel learns the replica is gone) asks from at least
    # the windows committed before the kill.
    resumed = _resumed_from(events)
    print(f"killed {victim} with {committed} windows committed; resumed from (window, of): {resumed}")
    assert resumed and all(committed <= k < count for k, count in resumed), (committed, resumed)
    assert results == uninterrupted  # bit-exact
    redone = re.findall(r"separation broke in window (\d+)", cluster.log())
    assert len(redone) <= 1, redone
    # The orchestrator's /metrics counts the failover.
    metrics_url = f"http://127.0.0.1:{cluster.ports['orchestrator-web']}/metrics"
    assert (scraped_value(metrics_url, "roar_stage_failovers_total", {"stage": "separation"}) or 0) >= 1


async def test_a_replica_stopping_mid_stage_hands_over_after_its_window(
    cluster: Cluster, song: Path, uninterrupted: dict[str, bytes]
) -> None:
    """SIGTERM (a rolling update): the replica ends the call after the window under way with
    UNAVAILABLE, and the job goes on from the next window on the other replica."""
    job_id = await _start_job(cluster, song)
    await _mid_stage(cluster)
    victim = cluster.busy(["separation-1", "separation-2"])
    committed = cluster.windows_done()
    try:
        assert cluster.kill(victim, signal.SIGTERM) == 0
        events, results = await _finish(cluster, job_id)
    finally:
        cluster.start(victim)
    resumed = _resumed_from(events)
    print(f"stopped {victim} with {committed} windows committed; resumed from (window, of): {resumed}")
    assert resumed and all(committed < k < count for k, count in resumed), (committed, resumed)
    assert results == uninterrupted


async def test_killing_the_orchestrator_mid_stage_resumes_from_the_checkpoint(
    cluster: Cluster, song: Path, uninterrupted: dict[str, bytes]
) -> None:
    job_id = await _start_job(cluster, song)
    await _mid_stage(cluster)
    committed = cluster.windows_done()
    cluster.kill("orchestrator")
    cluster.start("orchestrator")
    events, results = await _finish(cluster, job_id)
    assert "resuming after a restart" in [e.message for e in events]
    resumed = _resumed_from(events)
    print(f"killed the orchestrator with {committed} windows committed; resumed from: {resumed}")
    assert resumed and all(committed <= k < count for k, count in resumed), (committed, resumed)
    assert results == uninterrupted  # bit-exact
