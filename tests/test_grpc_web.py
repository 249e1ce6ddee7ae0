"""The orchestrator over grpc-web (sonora) on the web port, framed as a browser frames it."""

from __future__ import annotations

import struct
import urllib.request

from roar.v1 import orchestrator_pb2 as pb
from tests.support.suite import Suite


def grpc_web_call(
    suite: Suite, method: str, request: bytes, headers: dict[str, str] | None = None
) -> tuple[dict[str, str], list[bytes], dict[str, str]]:
    """POSTs one grpc-web request, with `headers` added; returns (headers, data frames, trailers)."""
    body = struct.pack(">BI", 0, len(request)) + request
    http = urllib.request.Request(
        f"{suite.web_url}/roar.v1.Orchestrator/{method}",
        data=body,
        headers={
            "Content-Type": "application/grpc-web+proto",
            "X-Grpc-Web": "1",
            "Accept": "application/grpc-web+proto",
            **(headers or {}),
        },
    )
    with urllib.request.urlopen(http, timeout=30) as response:
        headers = {k.lower(): v for k, v in response.headers.items()}
        payload = response.read()
    messages, trailers = [], {}
    while payload:
        flags, length = struct.unpack(">BI", payload[:5])
        frame, payload = payload[5 : 5 + length], payload[5 + length :]
        if flags & 0x80:
            for line in frame.decode("ascii").split("\r\n"):
                if line:
                    key, value = line.split(":", 1)
                    trailers[key.strip()] = value.strip()
        else:
            messages.append(frame)
    return headers, messages, trailers


def test_unary_call_has_a_well_formed_trailer(suite: Suite) -> None:
    _, messages, trailers = grpc_web_call(
        suite, "GetServerInfo", pb.GetServerInfoRequest().SerializeToString()
    )
    assert trailers == {"grpc-status": "0"}
    info = pb.ServerInfo.FromString(messages[0])
    assert info.default_separation_model in info.separation_models and info.max_chunk_bytes > 0


def test_errors_and_empty_streams_are_statuses_not_crashes(suite: Suite) -> None:
    headers, messages, _ = grpc_web_call(
        suite, "WatchJob", pb.WatchJobRequest(job_id="nope").SerializeToString()
    )
    assert headers["grpc-status"] == "5" and not messages  # NOT_FOUND, trailers-only

    jobs = pb.ListJobsResponse.FromString(grpc_web_call(suite, "ListJobs", b"")[1][0])
    finished = [j for j in jobs.jobs if j.last_event.stage == pb.STAGE_COMPLETE]
    if finished:
        job = finished[0]
        request = pb.WatchJobRequest(job_id=job.job_id, after_seq=job.last_event.seq).SerializeToString()
        headers, messages, _ = grpc_web_call(suite, "WatchJob", request)
        assert headers["grpc-status"] == "0" and not messages
        request = pb.WatchJobRequest(job_id=job.job_id, after_seq=job.last_event.seq - 1).SerializeToString()
        _, messages, trailers = grpc_web_call(suite, "WatchJob", request)
        assert [pb.ProgressEvent.FromString(m).seq for m in messages] == [job.last_event.seq]
        assert trailers["grpc-status"] == "0"


def test_the_page_is_served_from_the_same_origin(suite: Suite) -> None:
    with urllib.request.urlopen(f"{suite.web_url}/", timeout=30) as response:
        assert response.status == 200
        assert "text/html" in response.headers["content-type"]
