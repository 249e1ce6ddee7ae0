"""API keys and the stage key: the ROAR_AUTH decision, keys stored hashed, and a real `roar up`
under ROAR_AUTH=on where keys made with `roar keys` while it runs are checked on gRPC and on
grpc-web, each key sees only its own uploads and jobs, admins see all, a revoked key stops working,
and the stage services refuse calls without the stage key."""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from orchestrator.auth import ADMIN_KEY_OWNER, ANONYMOUS, Authenticator, create_key
from orchestrator.store import STORE_FILE, Store
from roar.auth import KeyPolicy, bearer_metadata, key_policy
from roar.config import Settings
from roar.errors import Unauthenticated
from roar.v1 import karaoke_pb2, karaoke_pb2_grpc
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.conftest import KEYED_ADMIN_KEY
from tests.support.songs import write_song
from tests.support.suite import REPO, Suite, free_port
from tests.test_grpc_web import grpc_web_call

ADMIN_KEY = KEYED_ADMIN_KEY  # keyed_suite's (tests/conftest.py)
WRONG_STAGE_KEY = "stage-key-0123456789abcdef"


def _settings(**changes: Any) -> Settings:
    return Settings(**changes)


# --- the decision and the keys, without servers ---


@pytest.mark.parametrize(
    ("mode", "host", "policy"),
    [
        ("auto", "127.0.0.1", KeyPolicy.OPTIONAL),
        ("auto", "localhost", KeyPolicy.OPTIONAL),
        ("auto", "::1", KeyPolicy.OPTIONAL),
        ("auto", "0.0.0.0", KeyPolicy.REQUIRED),
        ("auto", "10.1.2.3", KeyPolicy.REQUIRED),
        ("on", "127.0.0.1", KeyPolicy.REQUIRED),
        ("on", "0.0.0.0", KeyPolicy.REQUIRED),
        ("off", "127.0.0.1", KeyPolicy.OFF),
        ("off", "0.0.0.0", KeyPolicy.OFF),
    ],
)
def test_roar_auth_and_the_host_decide_whether_keys_are_needed(
    mode: str, host: str, policy: KeyPolicy
) -> None:
    assert key_policy(_settings(auth=mode), "test", host) is policy


def test_auth_off_beyond_loopback_warns_loudly(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        key_policy(_settings(auth="off"), "test", "127.0.0.1")
        assert not caplog.records
        key_policy(_settings(auth="off"), "test", "0.0.0.0")
    assert "ANYONE WHO CAN REACH THIS PORT" in caplog.text


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"auth": "maybe"}, "ROAR_AUTH must be one of auto, on, off, got 'maybe'"),
        ({"admin_key": "short"}, "ROAR_ADMIN_KEY is too short"),
        ({"stage_key": "short"}, "ROAR_STAGE_KEY is too short"),
    ],
)
def test_bad_auth_settings_refuse_to_start(changes: dict[str, str], message: str) -> None:
    with pytest.raises(SystemExit, match=re.escape(message)):
        key_policy(_settings(**changes), "test", "127.0.0.1")


def test_keys_are_stored_hashed_and_checked(tmp_path: Path) -> None:
    store = Store(tmp_path / STORE_FILE)
    alice, alice_key = create_key(store, "alice", admin=False)
    boss, boss_key = create_key(store, "boss", admin=True)
    secret = alice_key.split("_", 2)[2]
    store.close()
    assert re.fullmatch(r"roar_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", alice_key)
    # Only a hash is kept: the secret is nowhere in the database.
    dumped = "\n".join(sqlite3.connect(tmp_path / STORE_FILE).iterdump())
    assert secret not in dumped and alice.key_id in dumped

    store = Store(tmp_path / STORE_FILE)
    required = Authenticator(store, KeyPolicy.REQUIRED, ADMIN_KEY)
    assert required.caller(bearer_metadata(alice_key)).owner == alice.key_id
    assert required.caller([("authorization", f"bearer {alice_key}")]).owner == alice.key_id
    assert required.caller(bearer_metadata(boss_key)).admin
    env_admin = required.caller(bearer_metadata(ADMIN_KEY))
    assert env_admin.admin and env_admin.owner == ADMIN_KEY_OWNER
    tampered = alice_key[:-1] + ("A" if alice_key[-1] != "A" else "B")
    for metadata in (
        None,
        [("authorization", f"Basic {alice_key}")],
        bearer_metadata(tampered),
        bearer_metadata(ADMIN_KEY + "x"),
        bearer_metadata("roar_000000000000_" + "A" * 43),
    ):
        with pytest.raises(Unauthenticated):
            required.caller(metadata)
    assert store.revoke_key(alice.key_id) and not store.revoke_key(alice.key_id)
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        required.caller(bearer_metadata(alice_key))

    # On loopback under "auto" no key is needed, but one that is sent must be good.
    optional = Authenticator(store, KeyPolicy.OPTIONAL)
    assert optional.caller(None) is ANONYMOUS
    assert optional.caller(bearer_metadata(boss_key)).owner == boss.key_id
    with pytest.raises(Unauthenticated):
        optional.caller(bearer_metadata(tampered))
    # "off": keys are not even looked at.
    assert Authenticator(store, KeyPolicy.OFF).caller(bearer_metadata(tampered)) is ANONYMOUS
    with pytest.raises(ValueError):
        create_key(store, " ", admin=False)


def test_a_store_from_before_keys_gains_owners(tmp_path: Path) -> None:
    path = tmp_path / STORE_FILE
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE uploads (upload_id TEXT PRIMARY KEY, filename TEXT NOT NULL,"
        " size INTEGER NOT NULL, content_type TEXT NOT NULL, committed INTEGER NOT NULL DEFAULT 0,"
        " audio BLOB, created REAL NOT NULL);"
        "CREATE TABLE jobs (job_id TEXT PRIMARY KEY, upload_id TEXT NOT NULL, job BLOB NOT NULL,"
        " state INTEGER NOT NULL, created REAL NOT NULL);"
    )
    old.execute("INSERT INTO jobs VALUES ('j1', 'u1', ?, 1, 0)", (pb.Job(job_id="j1").SerializeToString(),))
    old.commit()
    old.close()
    store = Store(path)
    # Jobs made before keys belong to the anonymous caller, as every call did then.
    assert store.job_owner("j1") == ""
    assert [j.job_id for j in store.list_jobs(10, 0, owner="")] == ["j1"]
    assert store.list_jobs(10, 0, owner="someone") == []


def test_keys_commands_take_a_data_dir(tmp_path: Path) -> None:
    def keys(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "roar.cli", "keys", *args, "--data-dir", str(tmp_path)]
        return subprocess.run(command, cwd=REPO, env=_clean_env(), capture_output=True, text=True, timeout=60)

    made = keys("create", "--name", "ci runner", "--admin")
    assert made.returncode == 0, made.stderr
    key_id = made.stdout.split("_")[1]
    (row,) = keys("list").stdout.splitlines()[1:]
    assert row.split()[:2] == [key_id, "yes"] and row.endswith("  -                    ci runner")
    assert keys("create", "--name", " ").returncode == 2


# --- refusing to start beyond loopback (each exits before it binds anything) ---


def _clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROAR_")}
    return {**env, "PYTHONUNBUFFERED": "1", **settings}


def _start_refused(command: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0, f"it started:\n{result.stderr[-3000:]}"
    return result.stderr


def test_orchestrator_refuses_to_listen_beyond_loopback_without_keys(tmp_path: Path) -> None:
    env = _clean_env(ROAR_DATA_DIR=str(tmp_path), ROAR_AUTH="auto")
    ports = ["--port", str(free_port()), "--web-port", str(free_port())]
    stderr = _start_refused(["orchestrator.server", "--host", "0.0.0.0", *ports], env)
    assert "listening on 0.0.0.0 needs API keys, and there are none" in stderr
    assert "roar keys create" in stderr and "ROAR_ADMIN_KEY" in stderr


def test_orchestrator_refuses_a_bad_roar_auth(tmp_path: Path) -> None:
    env = _clean_env(ROAR_DATA_DIR=str(tmp_path), ROAR_AUTH="maybe")
    ports = ["--port", str(free_port()), "--web-port", str(free_port())]
    stderr = _start_refused(["orchestrator.server", *ports], env)
    assert "ROAR_AUTH must be one of auto, on, off, got 'maybe'" in stderr


def test_stage_refuses_to_listen_beyond_loopback_without_a_stage_key() -> None:
    env = _clean_env(ROAR_AUTH="auto")
    command = ["services.karaoke.server", "--host", "0.0.0.0", "--port", str(free_port())]
    stderr = _start_refused(command, env)
    assert "karaoke: listening on 0.0.0.0 needs a stage key: set ROAR_STAGE_KEY" in stderr


# --- a suite under ROAR_AUTH=on (keyed_suite, tests/conftest.py) ---


def roar(suite: Suite, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "roar.cli", *args],
        cwd=REPO,
        env={**suite.env, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def keys(keyed_suite: Suite) -> dict[str, str]:
    """Keys made with `roar keys create` while the suite runs."""
    made = {}
    for name, extra in (("alice", []), ("bob", []), ("boss", ["--admin"])):
        result = roar(keyed_suite, "keys", "create", "--name", name, *extra)
        assert result.returncode == 0, result.stderr
        assert "shown only this once" in result.stderr
        made[name] = result.stdout.strip()
    return made


@pytest.fixture(scope="module")
def alice_job(keyed_suite: Suite, keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A job of alice's, run to the end by `roar process --key`: the stages, which demand the stage
    key under ROAR_AUTH=on, did their work, so the orchestrator presented it."""
    folder = tmp_path_factory.mktemp("alice")
    song = write_song(folder / "alice-song.wav", 4.0)
    result = roar(keyed_suite, "process", str(song), "--key", keys["alice"], "--out", str(folder / "out"))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{keyed_suite.log(4000)}"
    (job_id,) = re.findall(r"job ([0-9a-f]{32}) succeeded", result.stdout)
    return job_id


@pytest.fixture(scope="module")
def alice_upload(keyed_suite: Suite, keys: dict[str, str]) -> str:
    """An unfinished upload of alice's."""
    upload = call(keyed_suite, "StartUpload", pb.StartUploadRequest(filename="a.wav", size=10), keys["alice"])
    return upload.upload_id


def call(suite: Suite, method: str, request: Any, key: str | None = None) -> Any:
    """One call on the suite's gRPC port with `key` (none when None); streams come back as lists."""
    with grpc.insecure_channel(suite.address) as channel:
        rpc = getattr(pb_grpc.OrchestratorStub(channel), method)
        reply = rpc(request, metadata=bearer_metadata(key or ""), timeout=30)
        return list(reply) if isinstance(reply, Iterator) else reply


def refused(suite: Suite, method: str, request: Any, key: str | None = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(suite, method, request, key)
    return info.value


JOB_CALLS = {
    "GetJob": lambda job_id: pb.GetJobRequest(job_id=job_id),
    "WatchJob": lambda job_id: pb.WatchJobRequest(job_id=job_id),
    "CancelJob": lambda job_id: pb.CancelJobRequest(job_id=job_id),
    "PauseJob": lambda job_id: pb.PauseJobRequest(job_id=job_id),
    "ResumeJob": lambda job_id: pb.ResumeJobRequest(job_id=job_id),
    "RetryJob": lambda job_id: pb.RetryJobRequest(job_id=job_id),
    "Download": lambda job_id: pb.DownloadRequest(job_id=job_id, name="lyrics.lrc"),
}
UPLOAD_CALLS = {
    "GetUpload": lambda upload_id: pb.GetUploadRequest(upload_id=upload_id),
    "UploadChunk": lambda upload_id: pb.UploadChunkRequest(upload_id=upload_id, offset=0, data=b"x" * 10),
    "FinishUpload": lambda upload_id: pb.FinishUploadRequest(upload_id=upload_id),
    "Process": lambda upload_id: pb.ProcessRequest(upload_id=upload_id),
}


def test_calls_without_a_good_key_are_unauthenticated(keyed_suite: Suite, keys: dict[str, str]) -> None:
    alice_id = keys["alice"].split("_")[1]
    bad_keys = [None, "nonsense", f"roar_{alice_id}_{'A' * 43}", ADMIN_KEY + "x"]
    requests = {
        "GetServerInfo": pb.GetServerInfoRequest(),
        "ListJobs": pb.ListJobsRequest(),
        "StartUpload": pb.StartUploadRequest(filename="a.wav", size=10),
        **{method: make("0" * 32) for method, make in {**JOB_CALLS, **UPLOAD_CALLS}.items()},
    }
    for key in bad_keys:
        for method, request in requests.items():
            error = refused(keyed_suite, method, request, key)
            assert error.code() == grpc.StatusCode.UNAUTHENTICATED, (method, key, error.details())
    assert "needs an API key" in refused(keyed_suite, "ListJobs", pb.ListJobsRequest()).details()
    # Health checks stay open: probes and `roar up` carry no key.
    with grpc.insecure_channel(keyed_suite.address) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_another_key_cannot_see_or_use_a_job_or_an_upload(
    keyed_suite: Suite, keys: dict[str, str], alice_job: str, alice_upload: str
) -> None:
    bob = keys["bob"]
    assert alice_job not in {j.job_id for j in call(keyed_suite, "ListJobs", pb.ListJobsRequest(), bob).jobs}
    for method, make in JOB_CALLS.items():
        error = refused(keyed_suite, method, make(alice_job), bob)
        # The same answer as for a job that does not exist: nothing tells that it does.
        assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, f"no job {alice_job!r}"), method
    for method, make in UPLOAD_CALLS.items():
        error = refused(keyed_suite, method, make(alice_upload), bob)
        assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, f"no upload {alice_upload!r}")
    # Nothing bob tried touched them.
    alice = keys["alice"]
    assert call(keyed_suite, "GetUpload", pb.GetUploadRequest(upload_id=alice_upload), alice).committed == 0
    job = call(keyed_suite, "GetJob", pb.GetJobRequest(job_id=alice_job), alice)
    assert job.state == pb.JOB_STATE_SUCCEEDED
    listed = call(keyed_suite, "ListJobs", pb.ListJobsRequest(), alice).jobs
    assert [j.job_id for j in listed] == [alice_job]
    chunks = call(keyed_suite, "Download", pb.DownloadRequest(job_id=alice_job, name="lyrics.lrc"), alice)
    assert chunks and chunks[0].total_size > 0


def test_admin_keys_see_every_job(keyed_suite: Suite, keys: dict[str, str], alice_job: str) -> None:
    for admin in (keys["boss"], ADMIN_KEY):
        listed = call(keyed_suite, "ListJobs", pb.ListJobsRequest(), admin).jobs
        assert alice_job in {j.job_id for j in listed}
        assert call(keyed_suite, "GetJob", pb.GetJobRequest(job_id=alice_job), admin).job_id == alice_job
        request = pb.DownloadRequest(job_id=alice_job, name="lyrics.lrc")
        assert b"".join(c.data for c in call(keyed_suite, "Download", request, admin))


def test_grpc_web_checks_keys_and_owners(keyed_suite: Suite, keys: dict[str, str], alice_job: str) -> None:
    def web(method: str, request: Any, key: str | None) -> tuple[dict[str, str], list[bytes], dict[str, str]]:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        return grpc_web_call(keyed_suite, method, request.SerializeToString(), headers)

    def status(reply: tuple[dict[str, str], list[bytes], dict[str, str]]) -> str:
        headers, _, trailers = reply
        return trailers.get("grpc-status") or headers["grpc-status"]

    for key in (None, "nonsense", keys["alice"][:-2] + "xx"):
        assert status(web("ListJobs", pb.ListJobsRequest(), key)) == "16"  # UNAUTHENTICATED
        assert status(web("WatchJob", pb.WatchJobRequest(job_id=alice_job), key)) == "16"
    _, messages, _ = web("ListJobs", pb.ListJobsRequest(), keys["alice"])
    assert [j.job_id for j in pb.ListJobsResponse.FromString(messages[0]).jobs] == [alice_job]
    _, messages, _ = web("ListJobs", pb.ListJobsRequest(), keys["bob"])
    assert alice_job not in {j.job_id for j in pb.ListJobsResponse.FromString(messages[0]).jobs}
    assert status(web("GetJob", pb.GetJobRequest(job_id=alice_job), keys["bob"])) == "5"  # NOT_FOUND
    assert status(web("WatchJob", pb.WatchJobRequest(job_id=alice_job), keys["bob"])) == "5"
    reply = web("WatchJob", pb.WatchJobRequest(job_id=alice_job), keys["alice"])
    assert status(reply) == "0" and pb.ProgressEvent.FromString(reply[1][-1]).state == pb.JOB_STATE_SUCCEEDED
    _, messages, _ = web("GetJob", pb.GetJobRequest(job_id=alice_job), ADMIN_KEY)
    assert pb.Job.FromString(messages[0]).job_id == alice_job


def test_cli_keys_and_revocation_on_a_running_suite(
    keyed_suite: Suite, keys: dict[str, str], alice_job: str
) -> None:
    jobs = roar(keyed_suite, "jobs", ROAR_API_KEY=keys["alice"])  # the key from the environment
    assert jobs.returncode == 0 and alice_job in jobs.stdout, jobs.stderr
    keyless = roar(keyed_suite, "jobs")
    assert keyless.returncode == 1 and "UNAUTHENTICATED" in keyless.stderr

    made = roar(keyed_suite, "keys", "create", "--name", "carol")
    carol = made.stdout.strip()
    carol_id = carol.split("_")[1]
    listed = roar(keyed_suite, "jobs", "--key", carol)
    assert listed.returncode == 0 and alice_job not in listed.stdout
    cancel = roar(keyed_suite, "cancel", alice_job, "--key", carol)
    assert cancel.returncode == 1 and "NOT_FOUND" in cancel.stderr

    revoked = roar(keyed_suite, "keys", "revoke", carol_id)
    assert revoked.returncode == 0, revoked.stderr
    after = roar(keyed_suite, "jobs", "--key", carol)
    assert after.returncode == 1 and "UNAUTHENTICATED: the API key is unknown or revoked" in after.stderr
    rows = {line.split()[0]: line for line in roar(keyed_suite, "keys", "list").stdout.splitlines()[1:]}
    assert set(rows) >= {carol_id, keys["alice"].split("_")[1]}
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+carol$", rows[carol_id])  # a revoked time
    assert carol.split("_", 2)[2] not in roar(keyed_suite, "keys", "list").stdout
    again = roar(keyed_suite, "keys", "revoke", carol_id)
    assert again.returncode == 1 and "no active key" in again.stderr


def test_stage_services_refuse_calls_without_the_stage_key(keyed_suite: Suite) -> None:
    address = keyed_suite.stage_addresses["karaoke"]
    request = karaoke_pb2.BuildRequest(options=karaoke_pb2.KaraokeOptions(duration_seconds=1.0))
    with grpc.insecure_channel(address) as channel:
        for metadata in ((), bearer_metadata(WRONG_STAGE_KEY)):
            with pytest.raises(grpc.RpcError) as info:
                list(karaoke_pb2_grpc.KaraokeStub(channel).Build(request, metadata=metadata, timeout=30))
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "stage key" in info.value.details()
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.browser
def test_the_page_asks_for_a_key_and_uses_it(
    keyed_suite: Suite, keys: dict[str, str], tmp_path: Path
) -> None:
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="needs PyPI playwright (pip install '.[dev]')"
    )
    from tests.test_browser import CHROMIUM, CHROMIUM_FLAGS, screenshot

    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (`make system-deps` installs it)")
    expect = sync_api.expect
    song = write_song(tmp_path / "from-the-page.wav", 2.0)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(keyed_suite.web_url)
            badge, form = page.get_by_test_id("connection-badge"), page.get_by_test_id("key-form")
            message = page.get_by_test_id("key-message")
            expect(badge).to_have_attribute("data-state", "key-needed")
            expect(message).to_contain_text("This server needs an API key")
            screenshot(page, "key-needed.png")

            page.get_by_test_id("key-input").fill("roar_nonsense")
            page.get_by_test_id("key-submit").click()
            expect(message).to_contain_text("refused this key (the API key is unknown or revoked)")
            page.get_by_test_id("key-input").fill(keys["alice"])
            page.get_by_test_id("key-submit").click()
            expect(badge).to_have_attribute("data-state", "connected")
            expect(form).to_be_hidden()
            expect(page.locator("#server-version")).to_contain_text("Roar server")

            # Every call now carries the key: an upload made on the page is alice's.
            page.get_by_test_id("file-input").set_input_files(song)
            item = page.locator("[data-testid=item]:visible")
            expect(item.get_by_test_id("process-button")).to_be_visible(timeout=60_000)
            (upload_id,) = page.evaluate("Object.values(JSON.parse(localStorage.getItem('roar.uploads.v1')))")
            request = pb.GetUploadRequest(upload_id=upload_id)
            assert call(keyed_suite, "GetUpload", request, keys["alice"]).finished
            assert refused(keyed_suite, "GetUpload", request, keys["bob"]).code() == grpc.StatusCode.NOT_FOUND

            # The key is remembered: a reload connects without asking.
            page.reload()
            expect(badge).to_have_attribute("data-state", "connected")
            expect(form).to_be_hidden()
            assert not errors, f"uncaught errors on the page: {errors}"
        finally:
            browser.close()
