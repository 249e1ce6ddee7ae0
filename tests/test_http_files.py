"""Job files over plain HTTP on the web port (orchestrator/files_http.py), against a real `roar up`
with tiny models: whole files byte for byte as the Download RPC sends them, byte ranges, HEAD, the
streamed ZIP of every file, names that are not the job's files, and API keys in the Authorization
header or in the cookie POST /session sets, with the gRPC API's owners and admins."""

from __future__ import annotations

import http.client
import io
import time
import zipfile
from pathlib import Path

import pytest

from orchestrator.store import Store, store_location
from roar.v1 import orchestrator_pb2 as pb
from tests.conftest import KEYED_ADMIN_KEY
from tests.support.songs import write_song
from tests.support.suite import Suite, create_key, downloaded, job_made_through_the_api

# A name to save the ZIP under that is not ASCII, nor a single word.
SONG = "Déjà vu (live).wav"


class Answer:
    def __init__(self, response: http.client.HTTPResponse) -> None:
        self.status = response.status
        self.headers = response.headers
        self.body = response.read()

    @property
    def text(self) -> str:
        return self.body.decode()


def request(
    suite: Suite, path: str, method: str = "GET", headers: dict[str, str] | None = None, key: str = ""
) -> Answer:
    """One HTTP request to the web port, its path sent as written (no normalising)."""
    connection = http.client.HTTPConnection("127.0.0.1", suite.web_port, timeout=60)
    sent = {"Host": f"127.0.0.1:{suite.web_port}", **(headers or {})}
    if key:
        sent["Authorization"] = f"Bearer {key}"
    try:
        connection.request(method, path, headers=sent)
        return Answer(connection.getresponse())
    finally:
        connection.close()


@pytest.fixture(scope="module")
def job(suite: Suite, tmp_path_factory: pytest.TempPathFactory) -> pb.Job:
    song = write_song(tmp_path_factory.mktemp("http-files") / SONG, 5.0, seed=11)
    return job_made_through_the_api(suite, song)


@pytest.fixture(scope="module")
def instrumental(suite: Suite, job: pb.Job) -> tuple[str, bytes]:
    (name,) = [a.name for a in job.artifacts if a.kind == "instrumental"]
    return name, downloaded(suite, job.job_id, name)


def test_every_file_downloads_whole_as_the_download_rpc_sends_it(suite: Suite, job: pb.Job) -> None:
    assert len(job.artifacts) >= 4
    for artifact in job.artifacts:
        answer = request(suite, f"/files/{job.job_id}/{artifact.name}")
        assert answer.status == 200, suite.log(3000)
        assert answer.body == downloaded(suite, job.job_id, artifact.name)
        assert int(answer.headers["Content-Length"]) == artifact.size == len(answer.body)
        assert answer.headers["Accept-Ranges"] == "bytes"
        assert answer.headers["Content-Type"].startswith(artifact.content_type)
        assert answer.headers["ETag"] and answer.headers["Last-Modified"]
        assert "Content-Disposition" not in answer.headers
    saved = request(suite, f"/files/{job.job_id}/lyrics.lrc?download=1")
    assert saved.status == 200
    assert saved.headers["Content-Disposition"].startswith('attachment; filename="lyrics.lrc"')


def test_byte_ranges_answer_206_with_exactly_those_bytes(
    suite: Suite, job: pb.Job, instrumental: tuple[str, bytes]
) -> None:
    name, whole = instrumental
    size = len(whole)
    path = f"/files/{job.job_id}/{name}"
    asked = {
        "bytes=0-99": (0, 99),  # the first bytes (a player reading the header)
        "bytes=1000-1999": (1000, 1999),  # the middle (a seek)
        "bytes=-500": (size - 500, size - 1),  # the last bytes
        f"bytes={size - 300}-": (size - 300, size - 1),  # open-ended
        f"bytes=10-{size + 5000}": (10, size - 1),  # past the end: cut at the end
        f"bytes=-{size + 5000}": (0, size - 1),  # a suffix longer than the file: all of it
    }
    for header, (first, last) in asked.items():
        answer = request(suite, path, headers={"Range": header})
        assert answer.status == 206, (header, answer.text)
        assert answer.body == whole[first : last + 1], header
        assert answer.headers["Content-Range"] == f"bytes {first}-{last}/{size}"
        assert int(answer.headers["Content-Length"]) == last - first + 1
    for header in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=-0"):
        refused = request(suite, path, headers={"Range": header})
        assert refused.status == 416, header
        assert refused.headers["Content-Range"] == f"bytes */{size}"
    # Several ranges, or a range this server does not read, get the whole file.
    for header in ("bytes=0-9,20-29", "bytes=9-1", "items=0-9"):
        answer = request(suite, path, headers={"Range": header})
        assert (answer.status, answer.body) == (200, whole), header
    # A range of an older version of the file (If-Range) gets the whole file.
    stale = request(suite, path, headers={"Range": "bytes=0-9", "If-Range": '"an-old-etag"'})
    assert (stale.status, stale.body) == (200, whole)
    etag = request(suite, path, "HEAD").headers["ETag"]
    fresh = request(suite, path, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert (fresh.status, fresh.body) == (206, whole[:10])
    # One log line per request, with the range served.
    log = suite.log()
    assert f"GET '{path}': 206 bytes 1000-1999/{size}" in log
    assert f"GET '{path}': 416 bytes */{size}" in log


def test_head_says_the_size_and_sends_nothing(
    suite: Suite, job: pb.Job, instrumental: tuple[str, bytes]
) -> None:
    name, whole = instrumental
    path = f"/files/{job.job_id}/{name}"
    head = request(suite, path, "HEAD")
    assert (head.status, head.body) == (200, b"")
    assert int(head.headers["Content-Length"]) == len(whole)
    assert head.headers["Accept-Ranges"] == "bytes"
    ranged = request(suite, path, "HEAD", {"Range": "bytes=0-99"})
    assert (ranged.status, ranged.body) == (206, b"")
    assert ranged.headers["Content-Range"] == f"bytes 0-99/{len(whole)}"
    assert request(suite, path, "POST").status in (403, 405)  # never changes anything


def test_the_zip_holds_every_file_of_the_job(suite: Suite, job: pb.Job) -> None:
    answer = request(suite, f"/files/{job.job_id}.zip")
    assert answer.status == 200, answer.text
    assert answer.headers["Content-Type"] == "application/zip"
    # http.client reads headers as latin-1; the server sends ASCII only, with the name in UTF-8 escapes.
    assert answer.headers["Content-Disposition"] == (
        "attachment; filename=\"D_j_ vu (live).zip\"; filename*=UTF-8''D%C3%A9j%C3%A0%20vu%20%28live%29.zip"
    )
    # Streamed as it is made: no length known in advance.
    assert "Content-Length" not in answer.headers
    with zipfile.ZipFile(io.BytesIO(answer.body)) as archive:
        assert archive.testzip() is None
        assert sorted(archive.namelist()) == sorted(a.name for a in job.artifacts)
        for artifact in job.artifacts:
            member = archive.getinfo(artifact.name)
            assert member.compress_type == zipfile.ZIP_STORED
            assert archive.read(artifact.name) == downloaded(suite, job.job_id, artifact.name)


@pytest.mark.parametrize(
    "name",
    [
        "no-such-file.wav",
        "..",
        "%2E%2E",
        "..%2F..%2Fstore.sqlite",
        "..%2F" + "x" * 32 + "%2Flyrics.lrc",
        ".lyrics.lrc.part",
        "lyrics.lrc%00",
        "lyrics.lrc/..",
    ],
)
def test_names_that_are_not_the_jobs_files_are_404(suite: Suite, job: pb.Job, name: str) -> None:
    answer = request(suite, f"/files/{job.job_id}/{name}")
    assert answer.status == 404, answer.text
    assert str(suite.data_dir) not in answer.text


def test_unknown_jobs_and_paths_are_404(suite: Suite, job: pb.Job) -> None:
    for path in (
        "/files/no-such-job/lyrics.lrc",
        "/files/no-such-job.zip",
        f"/files/..%2F{job.job_id}/lyrics.lrc",
        f"/files/{job.job_id}",
        "/files/",
        f"/files/{job.job_id}/lyrics.lrc/more",
    ):
        answer = request(suite, path)
        assert answer.status == 404, (path, answer.text)


def test_expired_files_are_404_with_the_retention_rule(suite: Suite, tmp_path: Path) -> None:
    expired = job_made_through_the_api(suite, write_song(tmp_path / "old.wav", 2.0, seed=3))
    # As the janitor records it once ROAR_RETENTION_DAYS have passed.
    store = Store(store_location("", suite.data_dir))
    try:
        store.mark_files_deleted(expired, time.time())
    finally:
        store.close()
    for path in (f"/files/{expired.job_id}/lyrics.lrc", f"/files/{expired.job_id}.zip"):
        answer = request(suite, path)
        assert answer.status == 404
        assert "expired" in answer.text and "ROAR_RETENTION_DAYS" in answer.text


# --- a suite that needs keys (ROAR_AUTH=on) ---


@pytest.fixture(scope="module")
def keys(keyed_suite: Suite) -> dict[str, str]:
    return {name: create_key(keyed_suite, name) for name in ("alice", "bob")}


@pytest.fixture(scope="module")
def alice_job(keyed_suite: Suite, keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> pb.Job:
    song = write_song(tmp_path_factory.mktemp("alice") / "alice.wav", 4.0, seed=12)
    return job_made_through_the_api(keyed_suite, song, keys["alice"])


def session_cookie(answer: Answer) -> dict[str, str]:
    """The Set-Cookie of an answer: its value under "value", its attributes by lower-case name."""
    first, *attributes = [part.strip() for part in answer.headers["Set-Cookie"].split(";")]
    name, _, value = first.partition("=")
    assert name == "roar_key"
    return {"value": value} | {a.partition("=")[0].lower(): a.partition("=")[2] for a in attributes}


def test_files_need_a_key_and_only_their_owner_or_an_admin_reads_them(
    keyed_suite: Suite, keys: dict[str, str], alice_job: pb.Job
) -> None:
    path = f"/files/{alice_job.job_id}/lyrics.lrc"
    whole = downloaded(keyed_suite, alice_job.job_id, "lyrics.lrc", keys["alice"])
    for tried in (path, f"/files/{alice_job.job_id}.zip"):
        keyless = request(keyed_suite, tried)
        assert keyless.status == 401
        assert keyless.headers["WWW-Authenticate"] == "Bearer"
        assert "needs an API key" in keyless.text
        wrong = request(keyed_suite, tried, key=keys["alice"][:-2] + "xx")
        assert (wrong.status, wrong.text.strip()) == (401, "the API key is unknown or revoked")
        # Another owner's job does not exist for bob, as on the gRPC API.
        stranger = request(keyed_suite, tried, key=keys["bob"])
        assert stranger.status == 404
        assert f"no job {alice_job.job_id!r}" in stranger.text
    assert request(keyed_suite, path, key=keys["alice"]).body == whole
    assert request(keyed_suite, path, key=KEYED_ADMIN_KEY).body == whole
    zipped = request(keyed_suite, f"/files/{alice_job.job_id}.zip", key=KEYED_ADMIN_KEY)
    assert zipped.status == 200
    assert zipfile.ZipFile(io.BytesIO(zipped.body)).read("lyrics.lrc") == whole


def test_post_session_keeps_the_key_in_a_cookie_for_the_files(
    keyed_suite: Suite, keys: dict[str, str], alice_job: pb.Job
) -> None:
    made = request(keyed_suite, "/session", "POST", key=keys["alice"])
    assert made.status == 204, made.text
    cookie = session_cookie(made)
    assert cookie["value"] == keys["alice"]
    assert cookie["path"] == "/files"
    assert cookie["samesite"] == "Strict"
    assert "httponly" in cookie and "secure" not in cookie  # plain HTTP here
    sent = {"Cookie": f"roar_key={cookie['value']}"}
    path = f"/files/{alice_job.job_id}/lyrics.lrc"
    answer = request(keyed_suite, path, headers=sent)
    assert answer.status == 200
    assert answer.body == downloaded(keyed_suite, alice_job.job_id, "lyrics.lrc", keys["alice"])
    assert request(keyed_suite, f"/files/{alice_job.job_id}.zip", headers=sent).status == 200
    # bob's cookie does not open alice's files; a header beats the cookie.
    bobs = {"Cookie": f"roar_key={keys['bob']}"}
    assert request(keyed_suite, path, headers=bobs).status == 404
    assert request(keyed_suite, path, headers=bobs, key=keys["alice"]).status == 200
    # Keys that are not good set no cookie.
    for key in (keys["alice"][:-2] + "xx", "not-a-key"):
        refused = request(keyed_suite, "/session", "POST", key=key)
        assert refused.status == 401 and "Set-Cookie" not in refused.headers
    missing = request(keyed_suite, "/session", "POST")
    assert missing.status == 400 and "Authorization: Bearer" in missing.text
    # DELETE /session makes the browser drop it.
    dropped = request(keyed_suite, "/session", "DELETE")
    assert dropped.status == 204
    gone = session_cookie(dropped)
    assert (gone["value"], gone["max-age"], gone["path"]) == ("", "0", "/files")
    assert request(keyed_suite, "/session", "GET").status == 405
    assert "POST '/session': 204" in keyed_suite.log()


def test_a_bad_key_is_refused_even_where_none_is_needed(suite: Suite, job: pb.Job) -> None:
    # Loopback under ROAR_AUTH=auto: no key is needed, but one that is sent must be good, as on gRPC.
    path = f"/files/{job.job_id}/lyrics.lrc"
    assert request(suite, path).status == 200
    assert request(suite, path, key="roar_000000000000_" + "x" * 43).status == 401
    assert request(suite, path, headers={"Cookie": "roar_key=nonsense"}).status == 401
