"""The slim client package (clients/python, `roar-client`) installed alone in a fresh venv: it
brings grpcio and protobuf, not torch, and runs a job against a real suite through roar.client."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.songs import write_song
from tests.support.suite import REPO, Suite

CLIENT_PROJECT = REPO / "clients" / "python"
# What the package may hold of roar/: the client and the light modules it imports, nothing that
# pulls the server's dependencies.
CLIENT_MODULES = {"__init__", "auth", "channel_options", "client", "config", "tls"}
# pip's words when the package registry cannot be reached (no network): then the test skips.
OFFLINE_SIGNS = ("NewConnectionError", "Failed to establish a new connection", "No matching distribution")

JOB_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from pathlib import Path

    import roar.client as client
    from roar.v1 import orchestrator_pb2 as pb
    from roar.v1 import orchestrator_pb2_grpc as pb_grpc

    async def main(address, song, lyrics, out):
        async with client.channel(address) as channel:
            stub = pb_grpc.OrchestratorStub(channel)
            upload = await client.upload_file(stub, Path(song))
            options = pb.JobOptions(lyrics=Path(lyrics).read_text())
            events = [e async for e in client.process(stub, upload.upload_id, options)]
            last = events[-1]
            size = await client.download(stub, last.job_id, "words.json", Path(out))
        print(json.dumps({
            "state": pb.JobState.Name(last.state),
            "bytes": size,
            "client_file": client.__file__,
            "torch_loaded": "torch" in sys.modules,
        }))

    asyncio.run(main(*sys.argv[1:]))
    """
)


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding roar-client installed from the local path (its dependencies from the
    package registry)."""
    venv = tmp_path_factory.mktemp("client-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    # setuptools builds in clients/python/build: a leftover from an older module list would ride along.
    shutil.rmtree(CLIENT_PROJECT / "build", ignore_errors=True)
    install = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", str(CLIENT_PROJECT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if install.returncode != 0:
        said = install.stdout[-2000:] + install.stderr[-2000:]
        if any(sign in said for sign in OFFLINE_SIGNS):
            pytest.skip(f"pip cannot reach the package registry for grpcio/protobuf:\n{said}")
        pytest.fail(f"pip install {CLIENT_PROJECT} failed:\n{said}")
    return venv


def test_the_package_holds_the_client_and_no_server_dependencies(client_venv: Path) -> None:
    pip = str(client_venv / "bin" / "pip")
    assert subprocess.run([pip, "show", "torch"], capture_output=True).returncode != 0
    installed = subprocess.run([pip, "show", "roar-client"], capture_output=True, text=True, check=True)
    requires = next(line for line in installed.stdout.splitlines() if line.startswith("Requires:"))
    assert sorted(r.strip() for r in requires.removeprefix("Requires:").split(",")) == ["grpcio", "protobuf"]
    (site_packages,) = (client_venv / "lib").glob("python3*/site-packages")
    modules = {p.stem for p in (site_packages / "roar").glob("*.py")}
    assert modules == CLIENT_MODULES
    stubs = {p.name for p in (site_packages / "roar" / "v1").glob("*_pb2*.py*")}
    assert stubs == {p.name for p in (REPO / "roar" / "v1").glob("*_pb2*.py*")}


def test_a_job_runs_through_the_installed_client(client_venv: Path, suite: Suite, tmp_path: Path) -> None:
    song = write_song(tmp_path / "song.flac", 6.0, fmt="flac")
    lyrics = tmp_path / "lyrics.txt"
    lyrics.write_text("hello from the slim client\n", encoding="utf-8")
    script = tmp_path / "job.py"
    script.write_text(JOB_SCRIPT)
    words = tmp_path / "words.json"
    # cwd and the script's folder are tmp_path, so `import roar` can only find the installed package.
    result = subprocess.run(
        [str(client_venv / "bin" / "python"), str(script), suite.address, str(song), str(lyrics), str(words)],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["state"] == "JOB_STATE_SUCCEEDED"
    assert Path(report["client_file"]).is_relative_to(client_venv)
    assert not report["torch_loaded"]
    assert report["bytes"] == words.stat().st_size > 0
    assert [w["word"] for w in json.loads(words.read_text())] == ["hello", "from", "the", "slim", "client"]
