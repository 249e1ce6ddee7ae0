"""The orchestrator over grpc-web (sonora) on the web port, framed as a browser frames it."""

from __future__ import annotations

import base64
import struct
import urllib.parse
import urllib.request

import grpc
import pytest

from roar.v1 import orchestrator_pb2 as pb
from tests.support.suite import Suite

GRPC_WEB_TEXT = "application/grpc-web-text"


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


def post(
    suite: Suite, method: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    """One raw POST to the web port: (HTTP status, headers, body)."""
    http = urllib.request.Request(
        f"{suite.web_url}/roar.v1.Orchestrator/{method}", data=body, headers={"X-Grpc-Web": "1", **headers}
    )
    with urllib.request.urlopen(http, timeout=30) as response:
        return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()


@pytest.mark.parametrize(
    ("content_type", "answered_as"),
    [
        ("application/grpc-web+json", "application/grpc-web+proto"),
        ("application/grpc-web-text+json", "application/grpc-web-text"),
        ("application/grpc-web+json; charset=utf-8", "application/grpc-web+proto"),
    ],
)
def test_the_json_codec_is_answered_unimplemented(suite: Suite, content_type: str, answered_as: str) -> None:
    frame = struct.pack(">BI", 0, 2) + b"{}"
    body = base64.b64encode(frame) if "text" in content_type else frame
    status, headers, payload = post(
        suite, "GetServerInfo", body, {"Content-Type": content_type, "Accept": content_type}
    )
    assert status == 200 and payload == b""
    assert headers["content-type"] == answered_as
    assert headers["grpc-status"] == str(grpc.StatusCode.UNIMPLEMENTED.value[0])
    message = urllib.parse.unquote(headers["grpc-message"])
    assert "JSON codec is not supported" in message and "application/grpc-web+proto" in message


@pytest.mark.parametrize("accept", ["text/html", "application/grpc-web+json", "*/*"])
def test_the_content_type_names_the_codec_not_the_accept_header(suite: Suite, accept: str) -> None:
    request = pb.GetServerInfoRequest().SerializeToString()
    frame = struct.pack(">BI", 0, len(request)) + request
    status, headers, payload = post(
        suite, "GetServerInfo", frame, {"Content-Type": "application/grpc-web+proto", "Accept": accept}
    )
    assert status == 200 and headers["content-type"] == "application/grpc-web+proto"
    assert pb.ServerInfo.FromString(payload[5 : 5 + struct.unpack(">I", payload[1:5])[0]]).max_chunk_bytes > 0

    # grpc-web-text answers in base64, and says so; a status-only answer (NOT_FOUND) too.
    status, headers, payload = post(
        suite, "GetServerInfo", base64.b64encode(frame), {"Content-Type": GRPC_WEB_TEXT, "Accept": accept}
    )
    assert headers["content-type"] == GRPC_WEB_TEXT
    assert base64.b64decode(payload)[0] == 0  # a message frame first
    missing = pb.WatchJobRequest(job_id="nope").SerializeToString()
    status, headers, payload = post(
        suite,
        "WatchJob",
        base64.b64encode(struct.pack(">BI", 0, len(missing)) + missing),
        {"Content-Type": GRPC_WEB_TEXT, "Accept": accept},
    )
    assert headers["grpc-status"] == "5" and headers["content-type"] == GRPC_WEB_TEXT
