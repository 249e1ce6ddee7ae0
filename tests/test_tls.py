"""TLS on every hop: a whole job with the client, the orchestrator, its web port and the stages all
on TLS; plaintext and unverified peers refused; mutual TLS between the orchestrator and a stage;
clear start-up errors for missing or mismatched files."""

from __future__ import annotations

import os
import re
import ssl
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from orchestrator.stages import stage_channel
from roar.config import Settings
from roar.service import is_serving
from roar.tls import channel_credentials, server_credentials, stage_channel_credentials
from roar.v1 import common_pb2, karaoke_pb2, karaoke_pb2_grpc
from roar.v1 import orchestrator_pb2 as pb
from tests.support.certs import Issued, issue, make_ca
from tests.support.songs import write_song
from tests.support.suite import REPO, Suite, create_key, free_port


@dataclass(frozen=True)
class Pki:
    ca: Issued
    server: Issued
    client: Issued
    stranger: Issued  # a client certificate from another CA


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    ca = make_ca(root, "roar-test-ca")
    other = make_ca(root / "other", "other-ca")
    return Pki(
        ca, issue(ca, root, "server"), issue(ca, root, "client"), issue(other, root / "other", "stranger")
    )


@pytest.fixture(scope="module")
def tls_suite(
    tmp_path_factory: pytest.TempPathFactory, tiny_models: dict[str, str], pki: Pki
) -> Iterator[Suite]:
    """`roar up` with TLS on every port it serves, and the orchestrator verifying the stages."""
    root = tmp_path_factory.mktemp("tls-suite")
    env = {
        **tiny_models,
        "ROAR_TLS_CERT": str(pki.server.cert),
        "ROAR_TLS_KEY": str(pki.server.key),
        "ROAR_STAGE_TLS_CA": str(pki.ca.cert),
    }
    running = Suite(
        root / "data", env, root / "roar-up.log", channel_credentials(str(pki.ca.cert), "test CA")
    )
    running.start()
    yield running
    running.stop()


def roar(
    *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    plain_env = {k: v for k, v in os.environ.items() if not k.startswith("ROAR_")}
    return subprocess.run(
        [sys.executable, "-m", "roar.cli", *args],
        cwd=REPO,
        env={**plain_env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_job_runs_with_tls_on_every_hop(tls_suite: Suite, pki: Pki, tmp_path: Path) -> None:
    song = write_song(tmp_path / "song.wav", 6.0)
    out = tmp_path / "out"
    result = roar(
        "process", str(song), "--out", str(out), "--server", tls_suite.address, "--ca", str(pki.ca.cert)
    )
    assert result.returncode == 0, result.stderr
    assert (out / "instrumental.wav").stat().st_size > 0 and (out / "lyrics.lrc").is_file()
    # Every server listened with TLS only, so every hop of the job was TLS; roar up checked their
    # health over TLS before it called the suite up.
    log = tls_suite.log()
    for name in ("orchestrator", "separation", "transcription", "karaoke"):
        assert re.search(rf"{name} listening on \S+ \(TLS\)", log), name
    assert "web page on https://" in log
    # ROAR_TLS_CA is the --ca default.
    listed = roar("jobs", "--server", tls_suite.address, env={"ROAR_TLS_CA": str(pki.ca.cert)})
    assert listed.returncode == 0 and "succeeded" in listed.stdout, listed.stderr


def test_plaintext_and_unverified_clients_are_refused(tls_suite: Suite, pki: Pki) -> None:
    plain = roar("jobs", "--server", tls_suite.address, timeout=120)
    # A plaintext client cannot tell a TLS server from none: the message says both.
    assert plain.returncode == 1 and "no Roar server answers" in plain.stderr
    assert "--ca CA.pem" in plain.stderr
    for address in [tls_suite.address, *tls_suite.stage_addresses.values()]:
        assert not is_serving(address)
        # A client that trusts another CA does not accept the servers' certificate.
        assert not is_serving(address, channel_credentials(str(pki.stranger.cert), "stranger"))
        assert is_serving(address, tls_suite.credentials)


def test_the_web_port_serves_the_page_and_grpc_web_over_https(tls_suite: Suite, pki: Pki) -> None:
    trusting = ssl.create_default_context(cafile=pki.ca.cert)
    assert tls_suite.web_url.startswith("https://")
    with urllib.request.urlopen(f"{tls_suite.web_url}/", context=trusting, timeout=30) as response:
        assert response.status == 200 and "text/html" in response.headers["content-type"]
    call = urllib.request.Request(
        f"{tls_suite.web_url}/roar.v1.Orchestrator/GetServerInfo",
        data=struct.pack(">BI", 0, 0),
        headers={"Content-Type": "application/grpc-web+proto", "X-Grpc-Web": "1"},
    )
    with urllib.request.urlopen(call, context=trusting, timeout=30) as response:
        payload = response.read()
    length = struct.unpack(">I", payload[1:5])[0]
    assert pb.ServerInfo.FromString(payload[5 : 5 + length]).max_chunk_bytes > 0
    assert b"grpc-status:0" in payload[5 + length :].replace(b" ", b"")

    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib.request.urlopen(f"{tls_suite.web_url}/", context=ssl.create_default_context(), timeout=30)
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{tls_suite.web_port}/", timeout=30)


def test_the_files_key_cookie_is_secure_over_https(tls_suite: Suite, pki: Pki) -> None:
    key = create_key(tls_suite, "tls-page")
    session = urllib.request.Request(
        f"{tls_suite.web_url}/session", method="POST", headers={"Authorization": f"Bearer {key}"}
    )
    trusting = ssl.create_default_context(cafile=pki.ca.cert)
    with urllib.request.urlopen(session, context=trusting, timeout=30) as response:
        assert response.status == 204
        attributes = response.headers["Set-Cookie"].split("; ")
    assert attributes[0] == f"roar_key={key}"
    assert {"Secure", "HttpOnly", "SameSite=Strict", "Path=/files"} <= set(attributes)


# --- mutual TLS between the orchestrator and a stage ---


@pytest.fixture
def mutual_tls_stage(pki: Pki, tmp_path: Path) -> Iterator[str]:
    """A karaoke service that requires client certificates signed by the test CA; its address."""
    address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "ROAR_TLS_CERT": str(pki.server.cert),
        "ROAR_TLS_KEY": str(pki.server.key),
        "ROAR_TLS_CLIENT_CA": str(pki.ca.cert),
    }
    log = (tmp_path / "karaoke.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "services.karaoke.server", "--port", address.rsplit(":", 1)[1]],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=log,
    )
    checked_by = channel_credentials(
        str(pki.ca.cert), "CA", str(pki.client.cert), str(pki.client.key), "c", "k"
    )
    try:
        deadline = time.monotonic() + 60
        while not is_serving(address, checked_by):
            assert process.poll() is None and time.monotonic() < deadline, (
                tmp_path / "karaoke.log"
            ).read_text()
            time.sleep(0.3)
        yield address
    finally:
        process.terminate()
        process.wait(30)


async def build_karaoke(address: str, settings: Settings) -> list[karaoke_pb2.BuildResponse]:
    """One Build call over the channel the orchestrator makes from these settings."""
    words = [common_pb2.Word(text="la", start=0.5 * i, end=0.5 * i + 0.4) for i in range(3)]
    line = common_pb2.Segment(text="la la la", start=0.0, end=1.4, words=words)
    options = karaoke_pb2.KaraokeOptions(
        transcript=common_pb2.Transcript(segments=[line]),
        formats=[common_pb2.LYRICS_FORMAT_LRC],
        duration_seconds=2.0,
    )
    async with stage_channel(address, stage_channel_credentials(settings)) as channel:
        calls = karaoke_pb2_grpc.KaraokeStub(channel).Build(
            karaoke_pb2.BuildRequest(options=options), timeout=30
        )
        return [response async for response in calls]


async def test_a_stage_with_mutual_tls_serves_only_the_orchestrator_with_its_certificate(
    mutual_tls_stage: str, pki: Pki
) -> None:
    with_certificate = Settings(
        stage_tls_ca=str(pki.ca.cert), stage_tls_cert=str(pki.client.cert), stage_tls_key=str(pki.client.key)
    )
    responses = await build_karaoke(mutual_tls_stage, with_certificate)
    assert any(r.file.name == "lyrics.lrc" for r in responses if r.HasField("file"))

    for refused in (
        Settings(stage_tls_ca=str(pki.ca.cert)),  # TLS, but no client certificate
        Settings(
            stage_tls_ca=str(pki.ca.cert),
            stage_tls_cert=str(pki.stranger.cert),
            stage_tls_key=str(pki.stranger.key),
        ),
        Settings(),  # plaintext
    ):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await build_karaoke(mutual_tls_stage, refused)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


# --- start-up errors ---


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"tls_cert": "{server.cert}"}, "ROAR_TLS_CERT is set but ROAR_TLS_KEY is not"),
        ({"tls_key": "{server.key}"}, "ROAR_TLS_KEY is set but ROAR_TLS_CERT is not"),
        ({"tls_cert": "{missing}", "tls_key": "{server.key}"}, "ROAR_TLS_CERT={missing}: cannot read it"),
        (
            {"tls_cert": "{server.cert}", "tls_key": "{client.key}"},
            "are not a certificate and its unencrypted key",
        ),
        ({"tls_cert": "{server.cert}", "tls_key": "{song}"}, "ROAR_TLS_KEY={song} is not a PEM file"),
        ({"tls_client_ca": "{ca.cert}"}, "ROAR_TLS_CLIENT_CA needs ROAR_TLS_CERT"),
        (
            {"tls_cert": "{server.cert}", "tls_key": "{server.key}", "tls_client_ca": "{server.key}"},
            "ROAR_TLS_CLIENT_CA={server.key} holds no usable CA certificate",
        ),
    ],
)
def test_server_tls_settings_errors_name_the_setting(
    pki: Pki, tmp_path: Path, settings: dict[str, str], message: str
) -> None:
    paths = {
        "server": pki.server,
        "client": pki.client,
        "ca": pki.ca,
        "missing": tmp_path / "missing.pem",
        "song": write_song(tmp_path / "song.wav", 0.1),
    }
    with pytest.raises(SystemExit, match=re.escape(message.format(**paths))):
        server_credentials(Settings(**{k: v.format(**paths) for k, v in settings.items()}))


def test_a_stage_with_a_bad_tls_setting_exits_with_the_message_not_a_trace(pki: Pki) -> None:
    env = {**os.environ, "ROAR_TLS_CERT": str(pki.server.cert), "ROAR_TLS_KEY": str(pki.client.key)}
    result = subprocess.run(
        [sys.executable, "-m", "services.karaoke.server", "--port", str(free_port())],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "ROAR_TLS_CERT" in result.stderr and "Traceback" not in result.stderr


def test_roar_up_refuses_stages_on_tls_it_could_not_verify(pki: Pki, tmp_path: Path) -> None:
    result = roar(
        "up",
        env={
            "ROAR_DATA_DIR": str(tmp_path),
            "ROAR_TLS_CERT": str(pki.server.cert),
            "ROAR_TLS_KEY": str(pki.server.key),
        },
        timeout=60,
    )
    assert result.returncode == 1 and "set ROAR_STAGE_TLS_CA" in result.stderr
    assert "starting" not in result.stdout  # nothing was started


def test_the_cli_names_a_missing_ca_file(tmp_path: Path) -> None:
    result = roar("jobs", "--ca", str(tmp_path / "nope.pem"), timeout=60)
    assert result.returncode == 1 and "--ca (ROAR_TLS_CA)" in result.stderr
    assert "Traceback" not in result.stderr
