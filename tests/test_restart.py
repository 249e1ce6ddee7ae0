"""A job survives a restart of the whole suite: it resumes and finishes, and its event stream
continues with no gap."""

from __future__ import annotations

from pathlib import Path

from roar import client
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support.songs import write_song
from tests.support.suite import Suite, start_job_until_separating


async def test_job_resumes_after_restart(tmp_path: Path, tiny_models: dict[str, str]) -> None:
    suite = Suite(tmp_path / "data", tiny_models, tmp_path / "roar-up.log")
    suite.start()
    try:
        song = write_song(tmp_path / "song.wav", 40.0)
        before = await start_job_until_separating(suite.address, song)
        assert suite.stop() == 0
        suite.start()
        async with client.channel(suite.address) as channel:
            stub = pb_grpc.OrchestratorStub(channel)
            after = [e async for e in client.follow(stub, before[0].job_id, before[-1].seq)]
            everything = [e async for e in stub.WatchJob(pb.WatchJobRequest(job_id=before[0].job_id))]
    finally:
        suite.stop()
    assert after[-1].state == pb.JOB_STATE_SUCCEEDED, suite.log()
    assert any("resuming" in e.message for e in after)
    assert [e.seq for e in everything] == list(range(1, len(everything) + 1))
    assert [e.SerializeToString() for e in everything[: len(before)]] == [
        e.SerializeToString() for e in before
    ]
