"""The web port against strangers' pages: cross-site requests (CSRF) run nothing, only listed origins
get CORS answers, foreign Host names (DNS rebinding) are refused, and malformed metadata is a
grpc-web status, never an HTTP 500."""

from __future__ import annotations

import asyncio
import base64
import http.client
import re
import struct
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from roar import client
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support.songs import write_song
from tests.support.suite import Suite, job_made_through_the_api

ALLOWED_ORIGIN = "https://karaoke.example"
FOREIGN_ORIGIN = "https://attacker.example"
GRPC_WEB = "application/grpc-web+proto"
CANCEL_PATH = "/roar.v1.Orchestrator/CancelJob"
INFO_PATH = "/roar.v1.Orchestrator/GetServerInfo"
# Long enough that the job is still separating while the test sends its requests.
SONG_SECONDS = 90.0


@pytest.fixture(scope="module")
def web_suite(tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, str]) -> Iterator[Suite]:
    root = tmp_path_factory.mktemp("web-security")
    running = Suite(root / "data", {**tiny_models, "ROAR_CORS_ORIGINS": ALLOWED_ORIGIN}, root / "roar-up.log")
    running.start()
    yield running
    running.stop()


@pytest.fixture
async def stub(web_suite: Suite) -> AsyncIterator[pb_grpc.OrchestratorStub]:
    async with client.channel(web_suite.address) as channel:
        yield pb_grpc.OrchestratorStub(channel)


def grpc_web_frame(message: bytes) -> bytes:
    return struct.pack(">BI", 0, len(message)) + message


def send(
    suite: Suite, method: str, path: str, headers: dict[str, str], body: bytes = b""
) -> http.client.HTTPResponse:
    """One raw HTTP request (any Host, Origin or content type, as a hostile page or client sends);
    the response's body is read into its `body` attribute."""
    connection = http.client.HTTPConnection("127.0.0.1", suite.web_port, timeout=30)
    connection.request(method, path, body=body, headers={"Host": f"127.0.0.1:{suite.web_port}", **headers})
    response = connection.getresponse()
    response.body = response.read()  # type: ignore[attr-defined]
    connection.close()
    return response


def grpc_status(response: http.client.HTTPResponse) -> str:
    """The grpc-status of a grpc-web response: in its headers (trailers-only) or its trailer frame."""
    if "grpc-status" in response.headers:
        return response.headers["grpc-status"]
    payload = response.body  # type: ignore[attr-defined]
    while payload:
        flags, length = struct.unpack(">BI", payload[:5])
        frame, payload = payload[5 : 5 + length], payload[5 + length :]
        if flags & 0x80:
            trailers = dict(line.split(":", 1) for line in frame.decode("ascii").split("\r\n") if line)
            return trailers["grpc-status"].strip()
    raise AssertionError("no grpc-status in the response")


def own_origin(suite: Suite) -> str:
    return f"http://127.0.0.1:{suite.web_port}"


async def test_cross_site_cancel_is_refused_and_the_job_runs_on(
    web_suite: Suite, stub: pb_grpc.OrchestratorStub, tmp_path: Path
) -> None:
    upload = await client.upload_file(stub, write_song(tmp_path / "long.wav", SONG_SECONDS))
    events = client.process(stub, upload.upload_id, pb.JobOptions())
    job_id = ""
    async for event in events:
        if event.stage == pb.STAGE_SEPARATION and event.state == pb.JOB_STATE_RUNNING:
            job_id = event.job_id
            break
    await events.aclose()
    assert job_id, "the job never started separating"
    body = grpc_web_frame(pb.CancelJobRequest(job_id=job_id).SerializeToString())

    # What a foreign page can make a browser send without a preflight: a text/plain or form POST
    # (refused for its Origin, and for its content type even when no Origin comes with it), and a
    # grpc-web POST from its own origin, which the browser may send only after a preflight.
    refused = [
        ({"Origin": FOREIGN_ORIGIN, "Content-Type": "text/plain"}, 403),
        ({"Origin": FOREIGN_ORIGIN, "Content-Type": GRPC_WEB, "X-Grpc-Web": "1"}, 403),
        ({"Content-Type": "text/plain;charset=UTF-8"}, 415),
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Origin": own_origin(web_suite), "Content-Type": "multipart/form-data; boundary=x"}, 415),
    ]
    for headers, status in refused:
        assert send(web_suite, "POST", CANCEL_PATH, headers, body).status == status, headers
    job = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
    assert job.state == pb.JOB_STATE_RUNNING, "a refused request cancelled the job"

    # The same request as the page sends it, from its own origin, does cancel: the refusals above
    # were the guard's doing.
    response = send(
        web_suite,
        "POST",
        CANCEL_PATH,
        {"Origin": own_origin(web_suite), "Content-Type": GRPC_WEB, "X-Grpc-Web": "1"},
        body,
    )
    assert response.status == 200 and grpc_status(response) == "0"
    for _ in range(100):
        job = await stub.GetJob(pb.GetJobRequest(job_id=job_id))
        if job.state == pb.JOB_STATE_CANCELLED:
            break
        await asyncio.sleep(0.2)
    assert job.state == pb.JOB_STATE_CANCELLED


def test_preflight_from_an_allowed_origin_gets_the_grpc_web_headers(web_suite: Suite) -> None:
    response = send(
        web_suite,
        "OPTIONS",
        INFO_PATH,
        {
            "Origin": ALLOWED_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-grpc-web,x-user-agent,authorization",
        },
    )
    assert response.status == 204
    assert response.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    allowed = {h.strip() for h in response.headers["access-control-allow-headers"].split(",")}
    assert {"content-type", "x-grpc-web", "x-user-agent", "authorization", "grpc-timeout"} <= allowed
    assert "Origin" in response.headers["vary"]

    # The call itself: answered, with the status trailers readable by the page.
    call = send(
        web_suite,
        "POST",
        INFO_PATH,
        {"Origin": ALLOWED_ORIGIN, "Content-Type": GRPC_WEB, "X-Grpc-Web": "1"},
        grpc_web_frame(b""),
    )
    assert call.status == 200 and grpc_status(call) == "0"
    assert call.headers["access-control-allow-origin"] == ALLOWED_ORIGIN
    exposed = {h.strip() for h in call.headers["access-control-expose-headers"].split(",")}
    assert {"grpc-status", "grpc-message"} <= exposed


def test_preflight_from_another_origin_is_refused(web_suite: Suite) -> None:
    response = send(
        web_suite,
        "OPTIONS",
        CANCEL_PATH,
        {"Origin": FOREIGN_ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert response.status == 403
    assert "access-control-allow-origin" not in response.headers


def test_job_files_and_the_key_cookie_are_for_the_own_page_only(web_suite: Suite, tmp_path: Path) -> None:
    job = job_made_through_the_api(web_suite, write_song(tmp_path / "own.wav", 2.0, seed=4))
    lyrics = f"/files/{job.job_id}/lyrics.lrc"
    assert send(web_suite, "GET", lyrics, {"Origin": own_origin(web_suite)}).status == 200
    # Even a listed CORS origin cannot read files or set the cookie: they are the page's own.
    for origin in (FOREIGN_ORIGIN, ALLOWED_ORIGIN):
        for method, path in (("GET", lyrics), ("HEAD", lyrics), ("GET", f"/files/{job.job_id}.zip")):
            refused = send(web_suite, method, path, {"Origin": origin, "Range": "bytes=0-9"})
            assert refused.status == 403, (origin, method, path)
            assert "access-control-allow-origin" not in refused.headers
        for headers in (
            {"Authorization": "Bearer roar_000000000000_" + "x" * 43},
            {"Content-Type": "application/x-www-form-urlencoded"},  # a form a hostile page submits
        ):
            session = send(web_suite, "POST", "/session", {"Origin": origin, **headers}, b"key=x")
            assert session.status == 403 and "set-cookie" not in session.headers
        preflight = {"Origin": origin, "Access-Control-Request-Method": "POST"}
        assert send(web_suite, "OPTIONS", "/session", preflight).status == 403
    for path in (lyrics, "/session"):
        assert send(web_suite, "GET", path, {"Host": "rebound.attacker.example"}).status == 421


@pytest.mark.parametrize("host", ["rebound.attacker.example", "attacker.example:{port}", "127.0.0.2:{port}"])
def test_a_foreign_host_name_is_refused_for_the_page_and_the_calls(web_suite: Suite, host: str) -> None:
    # DNS rebinding: the attacker's name resolves to this machine, and the browser sends it.
    host = host.format(port=web_suite.web_port)
    assert send(web_suite, "GET", "/", {"Host": host}).status == 421
    call = {"Host": host, "Content-Type": GRPC_WEB, "X-Grpc-Web": "1"}
    assert send(web_suite, "POST", INFO_PATH, call, grpc_web_frame(b"")).status == 421


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}", "LOCALHOST"])
def test_loopback_names_are_served(web_suite: Suite, host: str) -> None:
    response = send(web_suite, "GET", "/", {"Host": host.format(port=web_suite.web_port)})
    assert response.status == 200 and "text/html" in response.headers["content-type"]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("x-trace-bin", b"!!not base64!!"),
        ("x-trace-bin", b"abcde"),  # one character too many: no padding makes it whole
        ("x-note", "caf\u00e9".encode("latin-1")),
        ("grpc-timeout", b"soon"),
    ],
)
def test_malformed_metadata_is_invalid_argument_not_a_server_error(
    web_suite: Suite, name: str, value: bytes
) -> None:
    # A latin-1 str carries the raw bytes through http.client unchanged.
    headers = {"Content-Type": GRPC_WEB, name: value.decode("latin-1")}
    response = send(web_suite, "POST", INFO_PATH, headers, grpc_web_frame(b""))
    assert response.status == 200
    assert grpc_status(response) == "3"  # INVALID_ARGUMENT


def test_unpadded_binary_metadata_is_accepted(web_suite: Suite) -> None:
    # gRPC allows -bin values without their base64 padding.
    response = send(
        web_suite,
        "POST",
        INFO_PATH,
        {"Content-Type": GRPC_WEB, "X-Trace-Bin": "AAE"},  # b"\x00\x01", "AAE=" padded
        grpc_web_frame(b""),
    )
    assert response.status == 200
    assert grpc_status(response) == "0"


@pytest.mark.parametrize(
    "body",
    [
        grpc_web_frame(b"\xff\xff\xff"),  # not a CancelJobRequest
        grpc_web_frame(pb.CancelJobRequest(job_id="x").SerializeToString())[:-1],  # truncated
        b"\x01" + grpc_web_frame(b"")[1:],  # a compressed frame
    ],
    ids=["garbage", "truncated", "compressed"],
)
def test_malformed_bodies_are_invalid_argument_and_run_nothing(web_suite: Suite, body: bytes) -> None:
    # Had CancelJob run, the empty or garbled job id would be NOT_FOUND (5).
    response = send(web_suite, "POST", CANCEL_PATH, {"Content-Type": GRPC_WEB}, body)
    assert response.status == 200 and grpc_status(response) == "3"


def test_an_oversized_body_is_refused_before_it_is_read(web_suite: Suite) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", web_suite.web_port, timeout=30)
    connection.putrequest("POST", INFO_PATH)
    connection.putheader("Content-Type", GRPC_WEB)
    connection.putheader("Content-Length", str(10 * 2**30))
    connection.endheaders()
    response = connection.getresponse()
    connection.close()
    assert response.status == 200 and response.headers["grpc-status"] == "8"  # RESOURCE_EXHAUSTED


def test_grpc_web_text_arriving_in_pieces_is_decoded_whole(web_suite: Suite) -> None:
    # sonora decodes each piece of a base64 body on its own; a piece that is not whole base64 broke it.
    body = base64.b64encode(grpc_web_frame(b""))
    connection = http.client.HTTPConnection("127.0.0.1", web_suite.web_port, timeout=30)
    connection.putrequest("POST", INFO_PATH)
    connection.putheader("Content-Type", "application/grpc-web-text")
    connection.putheader("Content-Length", str(len(body)))
    connection.endheaders()
    for piece in (body[:3], body[3:]):
        connection.send(piece)
        time.sleep(0.3)  # separate reads on the server
    response = connection.getresponse()
    # The message and the trailer frame come as base64 pieces of their own, each padded.
    payload = b"".join(base64.b64decode(p) for p in re.findall(rb"[A-Za-z0-9+/]+=*", response.read()))
    connection.close()
    assert response.status == 200
    length = struct.unpack(">I", payload[1:5])[0]
    assert pb.ServerInfo.FromString(payload[5 : 5 + length]).max_chunk_bytes > 0
    assert b"grpc-status: 0" in payload[5 + length :]
