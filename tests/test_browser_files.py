"""Job files over HTTP in a real browser (Debian's headless Chromium, Playwright) against a real
`roar up` with tiny models: the download links save files byte for byte, "Download all" saves a ZIP
of every file, a keyed server's files need the key (which the page hands over as a cookie), and an
<audio> element plays a file the server sends in byte ranges."""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from roar.v1 import orchestrator_pb2 as pb
from tests.support.songs import write_song
from tests.support.suite import Suite, create_key, downloaded, job_made_through_the_api
from tests.test_browser import browser, expect, page, screenshot, shown_item

__all__ = ["browser", "page"]  # fixtures, used by name

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def job(suite: Suite, tmp_path_factory: pytest.TempPathFactory) -> pb.Job:
    song = write_song(tmp_path_factory.mktemp("browser-files") / "links song.wav", 5.0, seed=21)
    return job_made_through_the_api(suite, song)


def open_job(opened: Any, job: pb.Job) -> Any:
    """The job's details, opened from its link (#job=...)."""
    opened.goto(f"{opened.url.split('#')[0]}#job={job.job_id}")
    item = shown_item(opened)
    expect(item).to_have_attribute("data-job-id", job.job_id)
    expect(item.get_by_test_id("artifact-link")).to_have_count(len(job.artifacts))
    return item


def saved(opened: Any, link: Any) -> Any:
    with opened.expect_download() as download:
        link.click()
    assert download.value.failure() is None
    return download.value


def test_download_links_save_each_file_byte_for_byte(page: Any, suite: Suite, job: pb.Job) -> None:
    item = open_job(page, job)
    for artifact in job.artifacts:
        link = item.locator(f"[data-testid=artifact-link][data-name='{artifact.name}']")
        expect(link).to_have_attribute("href", f"/files/{job.job_id}/{artifact.name}?download=1")
        download = saved(page, link)
        assert download.suggested_filename == artifact.name
        assert Path(download.path()).read_bytes() == downloaded(suite, job.job_id, artifact.name)
    screenshot(page, "downloads.png")


def test_download_all_saves_a_zip_of_every_file(page: Any, suite: Suite, job: pb.Job) -> None:
    item = open_job(page, job)
    download = saved(page, item.get_by_test_id("download-all"))
    assert download.suggested_filename == "links song.zip"
    with zipfile.ZipFile(io.BytesIO(Path(download.path()).read_bytes())) as archive:
        assert sorted(archive.namelist()) == sorted(a.name for a in job.artifacts)
        for artifact in job.artifacts:
            assert archive.read(artifact.name) == downloaded(suite, job.job_id, artifact.name)


def test_a_keyed_servers_files_download_with_the_key_and_not_without(
    browser: Any, keyed_suite: Suite, tmp_path: Path
) -> None:
    key = create_key(keyed_suite, "dana")
    job = job_made_through_the_api(keyed_suite, write_song(tmp_path / "keyed.wav", 4.0, seed=22), key)
    name = "lyrics.lrc"
    file_path = f"/files/{job.job_id}/{name}"
    with_key = browser.new_context(accept_downloads=True)
    try:
        opened = with_key.new_page()
        opened.goto(keyed_suite.web_url)
        opened.get_by_test_id("key-input").fill(key)
        # The page hands the key to the server as soon as it is given (POST /session).
        with opened.expect_response(lambda r: r.url.endswith("/session") and r.status == 204):
            opened.get_by_test_id("key-submit").click()
        item = open_job(opened, job)
        link = item.locator(f"[data-testid=artifact-link][data-name='{name}']")
        download = saved(opened, link)
        assert Path(download.path()).read_bytes() == downloaded(keyed_suite, job.job_id, name, key)
        # The cookie is for the server alone: the page's scripts cannot read it.
        assert "roar_key" not in opened.evaluate("document.cookie")
        (cookie,) = [c for c in with_key.cookies() if c["name"] == "roar_key"]
        assert (cookie["value"], cookie["path"], cookie["httpOnly"]) == (key, "/files", True)
        # A reload gives it again, as after a browser restart that lost the session cookie.
        with_key.clear_cookies()
        with opened.expect_response(lambda r: r.url.endswith("/session") and r.status == 204):
            opened.reload()
        assert saved(opened, open_job(opened, job).locator(f"[data-name='{name}']")).failure() is None
    finally:
        with_key.close()

    without_key = browser.new_context(accept_downloads=True)
    try:
        opened = without_key.new_page()
        refused = opened.goto(f"{keyed_suite.web_url}{file_path}")
        assert refused.status == 401
        assert "needs an API key" in opened.locator("body").inner_text()
        zipped = opened.goto(f"{keyed_suite.web_url}/files/{job.job_id}.zip")
        assert zipped.status == 401
    finally:
        without_key.close()


# Plays a file through an <audio> element, seeking near its end once it can play: resolves with
# where it played from, or rejects with the element's error.
PLAY_AND_SEEK = """async (url) => {
  const audio = new Audio();
  audio.muted = true;  // headless Chromium plays muted audio without a user gesture
  audio.preload = "metadata";
  const event = (name) => new Promise((resolve, reject) => {
    audio.addEventListener(name, resolve, { once: true });
    const failed = () => reject(new Error(`audio error ${audio.error?.code}`));
    audio.addEventListener("error", failed, { once: true });
  });
  const canPlay = event("canplay");
  audio.src = url;
  await canPlay;
  const seeked = event("seeked");
  audio.currentTime = audio.duration - 2;
  await seeked;
  const playing = event("playing");
  await audio.play();
  await playing;
  return { duration: audio.duration, at: audio.currentTime };
}"""


def test_an_audio_element_plays_a_file_in_byte_ranges(page: Any, suite: Suite, tmp_path: Path) -> None:
    long_job = job_made_through_the_api(suite, write_song(tmp_path / "long.wav", 60.0, seed=23))
    (name,) = [a.name for a in long_job.artifacts if a.kind == "instrumental"]
    size = next(a.size for a in long_job.artifacts if a.name == name)
    path = f"/files/{long_job.job_id}/{name}"
    played = page.evaluate(PLAY_AND_SEEK, path)
    assert played["duration"] == pytest.approx(60.0, abs=0.1)
    assert played["at"] >= 57.0
    # The server's log: range requests, one of them from far into the file (the seek), so the
    # element did not have to fetch the whole file first.
    served = [
        (int(first), int(last))
        for first, last in re.findall(rf"GET '{re.escape(path)}': 206 bytes (\d+)-(\d+)/{size}", suite.log())
    ]
    assert served, suite.log(3000)
    assert any(first > size // 2 for first, _ in served), served
