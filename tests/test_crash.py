"""Crashes are survived: `roar up` restarts a stage killed mid-job and the job still succeeds; a job
resumed while its stages are down waits for them; an event and its job row land together, and a
database left by the old two-write crash window resumes instead of wedging."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.store import Store
from roar import client
from roar.service import is_serving
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support.songs import write_song
from tests.support.store_rows import new_event, new_job
from tests.support.suite import REPO, Suite, start_job_until_separating

STAGE_OF = {"separation": pb.STAGE_SEPARATION, "transcription": pb.STAGE_TRANSCRIPTION}


def service_pid(module: str, port: int) -> int:
    """The pid of the process running `python -m module --port port`."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue  # it exited while we looked
        if module.encode() in argv and str(port).encode() in argv:
            return int(entry.name)
    raise LookupError(f"no process runs {module} on port {port}")


def wait_until(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"still waiting after {timeout} s"
        time.sleep(0.3)


def wait_serving(address: str) -> None:
    wait_until(lambda: is_serving(address))


# The store: an event and its job row land together.


def test_a_process_dying_between_the_event_and_the_row_leaves_neither(tmp_path: Path) -> None:
    path = tmp_path / "roar.sqlite"
    store = Store(path)
    job = new_job("j1")
    store.put_job("u1", job)
    store.record(new_event(job, "first"), job)
    store.close()
    # Another process records the next event and dies the moment the job row's UPDATE begins:
    # after the event's INSERT ran, before anything was committed.
    script = textwrap.dedent(
        f"""
        import os
        from orchestrator.store import Store
        from roar.v1 import orchestrator_pb2 as pb
        store = Store(__import__("pathlib").Path({str(path)!r}))
        job = store.get_job("j1")
        event = pb.ProgressEvent(job_id="j1", message="second", state=job.state)
        store._db.set_trace_callback(lambda sql: os._exit(7) if sql.startswith("UPDATE jobs") else None)
        store.record(event, job)
        """
    )
    died = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, timeout=60)
    assert died.returncode == 7, died.stderr.decode()
    store = Store(path)
    assert [e.message for e in store.events_after("j1", 0)] == ["first"]
    assert store.get_job("j1").last_event.seq == 1
    # The next event continues the sequence.
    job = store.get_job("j1")
    store.record(new_event(job, "second"), job)
    assert [(e.seq, e.message) for e in store.events_after("j1", 0)] == [(1, "first"), (2, "second")]
    assert store.get_job("j1").last_event.message == "second"


def test_an_error_inside_the_transaction_stores_no_event(tmp_path: Path) -> None:
    store = Store(tmp_path / "roar.sqlite")
    orphan = new_job("no-row")
    with pytest.raises(LookupError):
        store.record(new_event(orphan, "lost"), orphan)
    assert store.events_after("no-row", 0) == []
    assert store.last_seq("no-row") == 0


def test_seq_comes_from_the_events_not_from_a_stale_row(tmp_path: Path) -> None:
    store = Store(tmp_path / "roar.sqlite")
    job = new_job("j1")
    store.put_job("u1", job)
    for message in ("one", "two", "three"):
        store.record(new_event(job, message), job)
    stale = store.get_job("j1")
    stale.last_event.CopyFrom(store.events_after("j1", 1)[0])  # the row as the old crash left it
    store.put_job("u1", stale)

    assert store.reconcile(stale) is True
    assert store.get_job("j1").last_event.message == "three"
    assert store.reconcile(store.get_job("j1")) is False
    stale.last_event.seq = 1  # even a caller holding a stale copy gets the next free seq
    store.record(new_event(stale, "four"), stale)
    assert [e.seq for e in store.events_after("j1", 0)] == [1, 2, 3, 4]


def test_a_final_event_whose_row_was_never_written_finishes_the_job(tmp_path: Path) -> None:
    store = Store(tmp_path / "roar.sqlite")
    job = new_job("j1")
    store.put_job("u1", job)
    store.record(new_event(job, "running"), job)
    row = store.get_job("j1")
    job.state = pb.JOB_STATE_SUCCEEDED
    job.artifacts.add(name="lyrics.lrc", kind="lyrics", size=3)
    final = new_event(job, "done")
    final.artifacts.extend(job.artifacts)
    store.record(final, job)
    store.put_job("u1", row)  # the row one event behind, still RUNNING

    assert store.unfinished_jobs() == [row]
    assert store.reconcile(row) is True
    assert row.state == pb.JOB_STATE_SUCCEEDED and [a.name for a in row.artifacts] == ["lyrics.lrc"]
    assert store.unfinished_jobs() == []


# `roar up` keeps the suite up through a stage crash; the job retries the stage.


@pytest.mark.parametrize("stage", ["separation", "transcription"])
async def test_a_stage_killed_mid_job_is_restarted_and_the_job_succeeds(
    tmp_path: Path, tiny_models: dict[str, str], stage: str
) -> None:
    suite = Suite(tmp_path / "data", tiny_models, tmp_path / "roar-up.log")
    suite.start()
    port = int(suite.stage_addresses[stage].rsplit(":", 1)[1])
    module = f"services.{stage}.server"
    try:
        victim = service_pid(module, port)
        killed = frozen = False
        song = write_song(tmp_path / "song.wav", 30.0)
        events = []
        async with client.channel(suite.address) as channel:
            stub = pb_grpc.OrchestratorStub(channel)
            upload = await client.upload_file(stub, song)
            async for event in stub.Process(pb.ProcessRequest(upload_id=upload.upload_id)):
                events.append(event)
                if killed:
                    continue
                if stage == "separation" and event.stage == pb.STAGE_SEPARATION and event.stage_percent > 0:
                    os.kill(victim, signal.SIGKILL)  # mid-way through its chunks
                    killed = True
                elif stage == "transcription" and event.stage == pb.STAGE_SEPARATION and not frozen:
                    # Transcription takes under a second with the tiny models: frozen now, it is
                    # still at the job's call when killed as the job reaches it.
                    os.kill(victim, signal.SIGSTOP)
                    frozen = True
                elif stage == "transcription" and event.stage == pb.STAGE_TRANSCRIPTION:
                    os.kill(victim, signal.SIGKILL)
                    killed = True
        assert killed, "the stage was never seen mid-way"
        assert suite.process is not None and suite.process.poll() is None, suite.log()
        for address in [suite.address, *suite.stage_addresses.values()]:
            wait_serving(address)
        assert service_pid(module, port) != victim
    finally:
        assert suite.stop() == 0
    log = suite.log()
    assert events[-1].state == pb.JOB_STATE_SUCCEEDED, log
    assert f"roar: {stage} exited with code -9; restarting it in 1 s (restart 1)" in log
    assert f"roar: {stage} restarted (restart 1)" in log
    retries = [e for e in events if "retrying (attempt 2)" in e.message]
    assert [(e.stage, e.stage_percent) for e in retries] == [(STAGE_OF[stage], 0.0)], log
    assert retries[0].message.startswith(f"{stage}: the service ")
    overall = [e.overall_percent for e in events]
    assert overall == sorted(overall)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))


def test_roar_up_restarts_a_service_that_keeps_failing_to_start(
    tmp_path: Path, tiny_models: dict[str, str]
) -> None:
    suite = Suite(tmp_path / "data", tiny_models, tmp_path / "roar-up.log")
    # Another socket holds karaoke's port (no SO_REUSEADDR: gRPC cannot share it), so the service
    # exits at start-up until the port is freed, once `roar up` has restarted it twice.
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", int(suite.stage_addresses["karaoke"].rsplit(":", 1)[1])))
    blocker.listen()
    second_failure = "roar: karaoke exited with code 1; restarting it in 2 s (restart 2)"

    def logged(text: str) -> bool:
        return suite.log_path.exists() and text in suite.log()

    def free_the_port() -> None:
        try:
            wait_until(lambda: logged(second_failure))
        finally:
            blocker.close()

    freeing = threading.Thread(target=free_the_port)
    freeing.start()
    try:
        suite.start()
        wait_until(lambda: logged("roar: up."))  # `roar up` saw them all serve, too
        assert suite.process is not None and suite.process.poll() is None
    finally:
        freeing.join()
        code = suite.stop()
    log = suite.log()
    assert code == 0, log
    assert "roar: karaoke exited with code 1; restarting it in 1 s (restart 1)" in log
    assert second_failure in log
    assert "roar: karaoke restarted (restart 2)" in log
    assert "roar: karaoke ready on" in log
    assert "roar: separation exited" not in log and "roar: transcription exited" not in log


# A database left by the old crash window (an event stored, its job row not) resumes.


async def test_job_rows_left_behind_their_events_resume_instead_of_wedging(
    tmp_path: Path, tiny_models: dict[str, str]
) -> None:
    # One job at a time: the first is mid-separation at the crash, the second still queued.
    env = {**tiny_models, "ROAR_MAX_RUNNING_JOBS": "1"}
    suite = Suite(tmp_path / "data", env, tmp_path / "roar-up.log")
    suite.start()
    try:
        # The running job's song is long: resumed from its checkpoint, it is still separating
        # when the cancel comes.
        songs = [write_song(tmp_path / "long.wav", 120.0), write_song(tmp_path / "song.wav", 20.0)]
        async with client.channel(suite.address) as channel:
            stub = pb_grpc.OrchestratorStub(channel)
            uploads = [await client.upload_file(stub, song) for song in songs]
            async for event in stub.Process(pb.ProcessRequest(upload_id=uploads[0].upload_id)):
                if event.stage == pb.STAGE_SEPARATION and event.stage_percent > 0:
                    running = event.job_id
                    break
            async for event in stub.Process(pb.ProcessRequest(upload_id=uploads[1].upload_id)):
                if "queued" in event.message:
                    queued = event.job_id
                    break
        assert suite.stop() == 0
        # The state the old code left when it died between storing an event and its job row.
        store = Store(suite.data_dir / "roar.sqlite")
        for job_id in (running, queued):
            row = store.get_job(job_id)
            assert row.state != pb.JOB_STATE_SUCCEEDED
            row.last_event.CopyFrom(store.events_after(job_id, 0)[-2])
            store.put_job(store.upload_of(job_id), row)
        store.close()

        suite.start()
        async with client.channel(suite.address) as channel:
            stub = pb_grpc.OrchestratorStub(channel)
            assert (await stub.CancelJob(pb.CancelJobRequest(job_id=running))).job_id == running

            async def watch(job_id: str) -> list[pb.ProgressEvent]:
                return [e async for e in stub.WatchJob(pb.WatchJobRequest(job_id=job_id))]

            cancelled = await asyncio.wait_for(watch(running), 120)
            succeeded = await asyncio.wait_for(watch(queued), 300)
    finally:
        suite.stop()
    log = suite.log()
    assert "IntegrityError" not in log
    assert log.count("its row lagged its events") == 2
    assert cancelled[-1].state == pb.JOB_STATE_CANCELLED, log
    assert succeeded[-1].state == pb.JOB_STATE_SUCCEEDED, log
    for events in (cancelled, succeeded):
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
    # Both resume; which one takes the single worker first is not fixed (the cancelled one may be
    # cancelled while still queued), the other runs to the end once it has the worker.
    assert any(e.message == "resuming after a restart" for e in succeeded)


# A job resumed while its stages are down waits for them.


class Services:
    """The four services as separate processes, without `roar up` to restart them, on the ports
    and with the settings of a Suite."""

    def __init__(self, suite: Suite) -> None:
        self._suite = suite
        self._log = suite.log_path.open("ab")
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, *names: str) -> None:
        for name in names:
            if name == "orchestrator":
                module = "orchestrator.server"
                ports = ["--port", str(self._suite.port), "--web-port", str(self._suite.web_port)]
            else:
                module = f"services.{name}.server"
                ports = ["--port", self._suite.stage_addresses[name].rsplit(":", 1)[1]]
            self.processes[name] = subprocess.Popen(
                [sys.executable, "-m", module, *ports],
                cwd=REPO,
                env=self._suite.env,
                stdout=self._log,
                stderr=self._log,
            )
        for name in names:
            address = self._suite.address if name == "orchestrator" else self._suite.stage_addresses[name]
            wait_serving(address)

    def stop(self, *names: str, sig: signal.Signals = signal.SIGTERM) -> None:
        for name in names:
            process = self.processes.pop(name, None)
            if process is not None:
                process.send_signal(sig)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()

    def stop_all(self) -> None:
        self.stop(*list(self.processes))
        self._log.close()


STAGE_SERVICES = ("separation", "transcription", "karaoke")
# Well past the ~7 s the orchestrator used to wait for a stage.
STAGES_DOWN_SECONDS = 12.0


async def test_a_job_resumed_while_its_stages_are_down_waits_for_them(
    tmp_path: Path, tiny_models: dict[str, str]
) -> None:
    suite = Suite(tmp_path / "data", tiny_models, tmp_path / "services.log")
    services = Services(suite)
    try:
        services.start(*STAGE_SERVICES, "orchestrator")
        song = write_song(tmp_path / "song.wav", 20.0)
        before = await start_job_until_separating(suite.address, song)
        # Everything goes down; only the orchestrator comes back at first.
        services.stop("orchestrator")
        services.stop(*STAGE_SERVICES, sig=signal.SIGKILL)
        services.start("orchestrator")
        job_id = before[0].job_id
        async with client.channel(suite.address) as channel:
            stub = pb_grpc.OrchestratorStub(channel)
            watch = stub.WatchJob(pb.WatchJobRequest(job_id=job_id, after_seq=before[-1].seq))
            following = asyncio.create_task(_collect(watch))
            await asyncio.sleep(STAGES_DOWN_SECONDS)
            waiting = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
            assert not following.done()
            services.start(*STAGE_SERVICES)
            after = await asyncio.wait_for(following, 300)
            everything = [e async for e in stub.WatchJob(pb.WatchJobRequest(job_id=job_id))]
    finally:
        services.stop_all()
    log = suite.log()
    assert waiting.state == pb.JOB_STATE_RUNNING, log
    # Transcription, streaming the vocals checkpointed before the restart, retries alongside.
    assert "the service is not up; retrying" in waiting.last_event.message
    assert any(e.message.startswith("separation: the service is not up; retrying") for e in after)
    assert after[-1].state == pb.JOB_STATE_SUCCEEDED, log
    assert after[0].message == "resuming after a restart"
    assert [e.seq for e in everything] == list(range(1, len(everything) + 1))
    overall = [e.overall_percent for e in everything]
    assert overall == sorted(overall)


async def _collect(events) -> list[pb.ProgressEvent]:
    return [e async for e in events]


async def test_a_stage_down_longer_than_the_retry_window_fails_naming_the_setting(
    tmp_path: Path, tiny_models: dict[str, str]
) -> None:
    suite = Suite(tmp_path / "data", {**tiny_models, "ROAR_STAGE_RETRY_SECONDS": "3"}, tmp_path / "o.log")
    services = Services(suite)  # no stage service ever starts
    try:
        services.start("orchestrator")
        async with client.channel(suite.address) as channel:
            stub = pb_grpc.OrchestratorStub(channel)
            upload = await client.upload_file(stub, write_song(tmp_path / "song.wav", 3.0))
            started = time.monotonic()
            events = [e async for e in client.process(stub, upload.upload_id, pb.JobOptions())]
            took = time.monotonic() - started
    finally:
        services.stop_all()
    final = events[-1]
    assert final.state == pb.JOB_STATE_FAILED
    [error] = final.errors
    assert error.stage == pb.STAGE_SEPARATION and error.code == "UNAVAILABLE"
    assert "separation service" in error.message and "ROAR_STAGE_RETRY_SECONDS" in error.message
    assert "ROAR_SEPARATION_ADDR" in error.message
    attempts = [e.message for e in events if "retrying (attempt" in e.message]
    assert attempts[0] == "separation: the service is not up; retrying (attempt 2)" and len(attempts) >= 3
    assert 3.0 <= took < 30.0
