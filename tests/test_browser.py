"""The web page in a real browser: Debian's headless Chromium driven by Playwright against a real
`roar up` with tiny models. Upload, the four stages in order, downloads byte for byte, the karaoke
player, several files at once with a reload, cancel, and a server restart mid-job.

Screenshots of the main states go to tests/screenshots/ (overwritten on every run)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from roar.client import TERMINAL_STATES
from roar.v1 import orchestrator_pb2 as pb
from roar.v1 import orchestrator_pb2_grpc as pb_grpc
from tests.support.songs import write_song
from tests.support.suite import Suite, create_key, job_made_through_the_api

sync_api = pytest.importorskip("playwright.sync_api", reason="needs PyPI playwright (pip install '.[dev]')")
expect = sync_api.expect

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
# Playwright gives every launch a fresh temporary profile (--user-data-dir) of its own.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STAGES = ["separation", "transcription", "karaoke", "complete"]
JOB_SECONDS = 120_000  # ms: a whole job of a short song on tiny models, with room for a busy machine

# Every change of a progress bar or a stage card, in order: [job id or file name, what, state, percent].
RECORD_PROGRESS = """
window.progressLog = [];
new MutationObserver((records) => {
  for (const record of records) {
    const target = record.target;
    const item = target.closest && target.closest("[data-testid=item]");
    if (!item) continue;
    const card = target.closest("[data-stage]");
    const bar = card ? card.querySelector("[role=progressbar]") : target.closest("[role=progressbar]");
    if (!bar) continue;
    window.progressLog.push([
      item.dataset.jobId || item.dataset.filename,
      card ? card.dataset.stage : bar.dataset.testid,
      card ? card.dataset.state : bar.dataset.state,
      Number(bar.getAttribute("aria-valuenow")),
    ]);
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["data-state", "aria-valuenow"] });
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"needs Debian's chromium at {CHROMIUM} (`make system-deps` installs it)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, suite: Suite) -> Iterator[Any]:
    """A fresh profile (no remembered jobs) on the page, connected to the suite."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    context.add_init_script(RECORD_PROGRESS)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.goto(suite.web_url)
    expect(opened.get_by_test_id("connection-badge")).to_have_attribute("data-state", "connected")
    yield opened
    context.close()
    assert not errors, f"uncaught errors on the page: {errors}"


def shown_item(page: Any) -> Any:
    return page.locator("[data-testid=item]:visible")


def upload(page: Any, song: Path) -> Any:
    page.get_by_test_id("file-input").set_input_files(song)
    item = shown_item(page)
    expect(item.get_by_test_id("process-button")).to_be_visible()
    return item


def stage(item: Any, name: str) -> Any:
    return item.get_by_test_id(f"stage-{name}")


def wait_for_stage_progress(page: Any, item: Any, name: str) -> None:
    expect(stage(item, name)).to_have_attribute("data-state", "processing", timeout=JOB_SECONDS)
    bar = item.get_by_test_id(f"stage-{name}-bar")
    page.wait_for_function("bar => Number(bar.getAttribute('aria-valuenow')) > 0", arg=bar.element_handle())


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    # Nothing caught halfway through an animation: the page drops them for reduced motion.
    page.emulate_media(reduced_motion="reduce")
    page.screenshot(path=SCREENSHOTS / name)
    page.emulate_media(reduced_motion="no-preference")


def server_job(suite: Suite, job_id: str) -> Any:
    with grpc.insecure_channel(suite.address) as channel:
        return pb_grpc.OrchestratorStub(channel).GetJob(pb.GetJobRequest(job_id=job_id), timeout=10)


def server_bytes(suite: Suite, job_id: str, name: str) -> bytes:
    with grpc.insecure_channel(suite.address) as channel:
        chunks = pb_grpc.OrchestratorStub(channel).Download(
            pb.DownloadRequest(job_id=job_id, name=name), timeout=30
        )
        return b"".join(chunk.data for chunk in chunks)


def stage_log(page: Any, job_id: str) -> list[tuple[str, str, float]]:
    return [
        (what, state, percent) for key, what, state, percent in page.evaluate("progressLog") if key == job_id
    ]


def test_a_song_goes_through_the_four_stages_and_its_files_download(
    page: Any, suite: Suite, tmp_path: Path
) -> None:
    song = write_song(tmp_path / "song.wav", 8.0)
    item = upload(page, song)
    upload_bar = item.get_by_test_id("upload-bar")
    expect(upload_bar).to_have_attribute("data-state", "done")
    expect(upload_bar).to_have_attribute("aria-valuenow", "100")
    expect(item.get_by_test_id("file-duration")).to_have_text("0:08")
    expect(item.get_by_test_id("file-size")).to_have_text(f"{song.stat().st_size / 2**20:.1f} MB")
    # The 1.4 MB file goes up in several chunks, and the bar shows each.
    upload_percents = [p for key, what, _, p in page.evaluate("progressLog") if what == "upload-bar"]
    assert any(0 < p < 100 for p in upload_percents), upload_percents

    # Notifications, asked for on a click, and counted as the page shows them.
    page.context.grant_permissions(["notifications"], origin=suite.web_url)
    page.evaluate(
        """() => {
          window.shownNotifications = [];
          window.Notification = class extends Notification {
            constructor(title, options) {
              super(title, options);
              window.shownNotifications.push(title);
            }
          };
        }"""
    )
    page.get_by_test_id("notify-button").click()
    expect(page.get_by_test_id("notify-button")).to_have_text("Notifications on")

    item.get_by_test_id("opt-lyrics").fill("sing a song of roar\nevery word in time")
    item.get_by_test_id("process-button").click()
    expect(stage(item, "complete")).to_have_attribute("data-state", "done", timeout=JOB_SECONDS)
    job_id = item.get_attribute("data-job-id")
    assert server_job(suite, job_id).state == pb.JOB_STATE_SUCCEEDED
    assert page.evaluate("shownNotifications") == [f"Roar: {song.name}"]

    log = stage_log(page, job_id)
    started = [
        next(i for i, (what, state, _) in enumerate(log) if what == name and state != "waiting")
        for name in STAGES
    ]
    assert started == sorted(started), f"stages began out of order: {log}"
    for name in STAGES[:3]:
        percents = [p for what, state, p in log if what == name and state == "processing"]
        assert percents == sorted(percents), f"{name} went backwards: {percents}"
    separation = [p for what, state, p in log if what == "separation" and state == "processing"]
    assert any(0 < p < 100 for p in separation), f"separation never showed progress: {separation}"
    for name in STAGES:
        expect(stage(item, name)).to_have_attribute("data-state", "done")
    expect(item.get_by_test_id("cancel-job")).to_be_hidden()

    artifacts = {a.name for a in server_job(suite, job_id).artifacts}
    links = item.get_by_test_id("artifact-link")
    assert {links.nth(i).get_attribute("data-name") for i in range(links.count())} == artifacts
    for name in ("instrumental.wav", "lines.json"):
        with page.expect_download() as download:
            item.locator(f"[data-testid=artifact-link][data-name='{name}']").click()
        assert download.value.suggested_filename == name
        assert Path(download.value.path()).read_bytes() == server_bytes(suite, job_id, name)

    # The player lights the words of the line being sung: seek into the second word of the second line.
    lines = json.loads(server_bytes(suite, job_id, "lines.json"))
    words = json.loads(server_bytes(suite, job_id, "words.json"))
    line = lines[1]
    line_words = [words[i] for i in line["words"]]
    at = (line_words[1]["start"] + line_words[1]["end"]) / 2
    item.get_by_test_id("player-load").click()
    audio = item.get_by_test_id("player-audio")
    expect(audio).to_be_visible()
    audio.evaluate("(audio, at) => { audio.pause(); audio.currentTime = at; }", at)
    expect(item.get_by_test_id("karaoke-line")).to_have_text(" ".join(w["word"] for w in line_words))
    expected = ["sung" if at >= w["end"] else "now" if at >= w["start"] else "upcoming" for w in line_words]
    page.wait_for_function(
        "([line, states]) => [...line.querySelectorAll('.word')].map(w => w.dataset.state).join() == states",
        arg=[item.get_by_test_id("karaoke-line").element_handle(), ",".join(expected)],
    )
    expect(item.get_by_test_id("karaoke-next")).to_have_text(lines[2]["text"] if len(lines) > 2 else "")
    options = item.get_by_test_id("player-source").locator("option")
    assert [options.nth(i).get_attribute("value") for i in range(options.count())] == [
        "instrumental",
        "vocals",
        "original",
    ]
    screenshot(page, "job-done.png")

    # A phone: one column, nothing wider than the screen, in the dark theme.
    page.set_viewport_size({"width": 390, "height": 844})
    page.emulate_media(color_scheme="dark")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    expect(page.locator("body")).to_have_css("background-color", "rgb(20, 19, 18)")
    expect(page.get_by_test_id("drop-zone")).to_have_css("background-color", "rgb(31, 30, 28)")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "phone-dark.png")


def test_an_upload_goes_on_after_a_dropped_chunk(page: Any, tmp_path: Path) -> None:
    song = write_song(tmp_path / "dropped-chunk.wav", 6.0)
    calls: list[str] = []
    page.on("request", lambda request: calls.append(request.url.rsplit("/", 1)[-1]))

    def drop_second_chunk(route: Any) -> None:
        if calls.count("UploadChunk") == 2:
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/roar.v1.Orchestrator/UploadChunk", drop_second_chunk)
    item = upload(page, song)
    expect(item.get_by_test_id("upload-bar")).to_have_attribute("aria-valuenow", "100")
    expect(item.get_by_test_id("file-duration")).to_have_text("0:06")
    # The page asked the server how much it had, and sent the rest from there.
    uploads = [c for c in calls if c in ("StartUpload", "UploadChunk", "GetUpload", "FinishUpload")]
    assert uploads[:4] == ["StartUpload", "UploadChunk", "UploadChunk", "GetUpload"], uploads
    assert uploads[-1] == "FinishUpload" and uploads.count("StartUpload") == 1, uploads


def test_dropped_files_are_processed_side_by_side_and_survive_a_reload(
    page: Any, suite: Suite, tmp_path: Path
) -> None:
    songs = [write_song(tmp_path / f"dropped-{seed}.wav", 5.0, seed=seed) for seed in (1, 2)]
    files = page.evaluate_handle(
        """(files) => {
          const transfer = new DataTransfer();
          for (const [name, data] of files) {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            transfer.items.add(new File([bytes], name, { type: "audio/wav" }));
          }
          return transfer;
        }""",
        [[song.name, base64.b64encode(song.read_bytes()).decode()] for song in songs],
    )
    page.get_by_test_id("drop-zone").dispatch_event("drop", {"dataTransfer": files})
    # Only this test's songs: the page also lists the jobs earlier tests made on the shared suite.
    entries = page.locator("[data-testid=job-entry][data-filename^='dropped-']")
    expect(entries).to_have_count(2)
    for song in songs:
        page.locator(f"[data-testid=job-entry][data-filename='{song.name}'] button").click()
        item = shown_item(page)
        expect(item).to_have_attribute("data-filename", song.name)
        item.get_by_test_id("process-button").click()
        expect(item).to_have_attribute("data-job-id", re.compile(r"\w+"))
    job_ids = [entries.nth(i).get_attribute("data-job-id") for i in range(2)]

    # A reload while the jobs run: both come back from localStorage and are followed to the end.
    page.reload()
    expect(entries).to_have_count(2)
    for i in range(2):
        expect(entries.nth(i)).to_have_attribute("data-state", "succeeded", timeout=JOB_SECONDS)
    assert sorted(entries.nth(i).get_attribute("data-job-id") for i in range(2)) == sorted(job_ids)
    remembered = {job["jobId"]: job for job in page.evaluate("JSON.parse(localStorage['roar.jobs.v1'])")}
    for job_id in job_ids:
        job = server_job(suite, job_id)
        assert job.state == pb.JOB_STATE_SUCCEEDED
        assert remembered[job_id]["lastSeq"] == str(job.last_event.seq)
        page.locator(f"[data-testid=job-entry][data-job-id='{job_id}'] button").click()
        item = shown_item(page)
        for name in STAGES:
            expect(stage(item, name)).to_have_attribute("data-state", "done")
        expect(item.get_by_test_id("artifact-link")).to_have_count(len(job.artifacts))


def test_cancel_mid_separation(page: Any, suite: Suite, tmp_path: Path) -> None:
    item = upload(page, write_song(tmp_path / "long.wav", 60.0))
    item.get_by_test_id("process-button").click()
    wait_for_stage_progress(page, item, "separation")
    screenshot(page, "processing.png")
    item.get_by_test_id("cancel-job").click()
    expect(item.get_by_test_id("job-state")).to_have_attribute("data-state", "cancelled")
    expect(stage(item, "separation")).to_have_attribute("data-state", "cancelled")
    # Transcription starts with separation's first window: it was cancelled too, or never began.
    expect(stage(item, "transcription")).to_have_attribute("data-state", re.compile("^(waiting|cancelled)$"))
    expect(stage(item, "karaoke")).to_have_attribute("data-state", "waiting")
    expect(stage(item, "complete")).to_have_attribute("data-state", "cancelled")
    expect(item.get_by_test_id("cancel-job")).to_be_hidden()
    assert server_job(suite, item.get_attribute("data-job-id")).state == pb.JOB_STATE_CANCELLED


def test_the_page_rides_out_a_server_restart(page: Any, suite: Suite, tmp_path: Path) -> None:
    watched_from: list[int] = []

    def on_request(request: Any) -> None:
        if request.url.endswith("/roar.v1.Orchestrator/WatchJob"):
            # One grpc-web frame: a flag byte, a 4-byte length, the message.
            watched_from.append(pb.WatchJobRequest.FromString(request.post_data_buffer[5:]).after_seq)

    page.on("request", on_request)
    item = upload(page, write_song(tmp_path / "restart.wav", 40.0))
    item.get_by_test_id("process-button").click()
    wait_for_stage_progress(page, item, "separation")
    job_id = item.get_attribute("data-job-id")
    badge = page.get_by_test_id("connection-badge")
    try:
        suite.stop()
        expect(badge).to_have_attribute("data-state", "disconnected", timeout=30_000)
        screenshot(page, "disconnected.png")
        seen = {j["jobId"]: j for j in page.evaluate("JSON.parse(localStorage['roar.jobs.v1'])")}[job_id]
    finally:
        suite.start()
    expect(badge).to_have_attribute("data-state", "connected", timeout=30_000)
    expect(stage(item, "complete")).to_have_attribute("data-state", "done", timeout=JOB_SECONDS)

    job = server_job(suite, job_id)
    assert job.state == pb.JOB_STATE_SUCCEEDED
    # Re-attached from the last event it had seen, and saw every later one.
    assert watched_from and watched_from[0] == int(seen["lastSeq"]) > 0, (watched_from, seen["lastSeq"])
    remembered = {j["jobId"]: j for j in page.evaluate("JSON.parse(localStorage['roar.jobs.v1'])")}
    assert remembered[job_id]["lastSeq"] == str(job.last_event.seq)
    for name in STAGES:
        expect(stage(item, name)).to_have_attribute("data-state", "done")


def test_the_analytics_view_counts_the_jobs_run(page: Any, suite: Suite, tmp_path: Path) -> None:
    with grpc.insecure_channel(suite.address) as channel:
        before = pb_grpc.OrchestratorStub(channel).GetStats(pb.GetStatsRequest(), timeout=10)
    item = upload(page, write_song(tmp_path / "counted.wav", 6.0, seed=3))
    item.get_by_test_id("process-button").click()
    expect(stage(item, "complete")).to_have_attribute("data-state", "done", timeout=JOB_SECONDS)
    # A listed separation model whose files are missing (conftest): the job fails in separation.
    item = upload(page, write_song(tmp_path / "no-model.wav", 3.0, seed=4))
    item.get_by_test_id("opt-separation-model").select_option("broken")
    item.get_by_test_id("process-button").click()
    expect(item.get_by_test_id("job-state")).to_have_attribute("data-state", "failed", timeout=JOB_SECONDS)
    failed_id = item.get_attribute("data-job-id")

    page.get_by_test_id("analytics-link").click()
    view = page.get_by_test_id("analytics")
    expect(view).to_have_attribute("data-state", "loaded")
    expect(page.get_by_test_id("drop-zone")).to_be_hidden()
    expect(page.get_by_test_id("stats-scope")).to_contain_text("Every caller's jobs")
    # The totals against every job the server lists (all of them made within the 30 days shown).
    with grpc.insecure_channel(suite.address) as channel:
        jobs = pb_grpc.OrchestratorStub(channel).ListJobs(pb.ListJobsRequest(page_size=500), timeout=10).jobs
    states = [job.state for job in jobs]
    expect(page.get_by_test_id("total-jobs")).to_have_text(str(len(jobs)))
    for name in ("succeeded", "partial", "failed", "cancelled"):
        count = states.count(getattr(pb, f"JOB_STATE_{name.upper()}"))
        expect(page.get_by_test_id(f"total-{name}")).to_have_text(str(count))

    # Stage runs: both jobs separated (one failed); only the first transcribed and built lyrics.
    runs_before = {s.stage: (s.runs, s.succeeded) for s in before.stages}
    for stage_id, name, added_runs in (
        (pb.STAGE_SEPARATION, "separation", 2),
        (pb.STAGE_TRANSCRIPTION, "transcription", 1),
        (pb.STAGE_KARAOKE, "karaoke", 1),
    ):
        runs, succeeded = runs_before.get(stage_id, (0, 0))
        row = page.locator(f"[data-testid=stage-row][data-stage={name}]")
        expect(row.locator("[data-field=runs]")).to_have_text(str(runs + added_runs))
        expect(row.locator("[data-field=succeeded]")).to_have_text(str(succeeded + 1))
        expect(row.locator("[data-field=seconds-per-audio-minute]")).to_have_text(re.compile(r"^\d+\.\d$"))

    # One bar per day, the newest (today) holding both jobs more than before; success bars today.
    bars = page.get_by_test_id("day-bar")
    expect(bars).to_have_count(30)
    expect(bars.last).to_have_attribute("data-jobs", str(before.days[-1].jobs + 2))
    assert bars.last.locator("rect").count() >= 2  # succeeded and failed, stacked
    assert page.get_by_test_id("success-bar").count() >= 3
    finished = sum(state in TERMINAL_STATES for state in states)
    expect(page.get_by_test_id("slowest-row")).to_have_count(min(10, finished))
    failed_first = page.get_by_test_id("failed-row").first
    expect(failed_first).to_have_attribute("data-job-id", failed_id)
    expect(failed_first.locator("[data-field=errors]")).to_contain_text("Separation: FAILED_PRECONDITION: ")

    page.set_viewport_size({"width": 1280, "height": 1900})
    screenshot(page, "analytics.png")
    # Back to the songs: the jobs are still listed there.
    page.get_by_test_id("songs-link").click()
    expect(page.get_by_test_id("drop-zone")).to_be_visible()
    for song in ("counted.wav", "no-model.wav"):
        expect(page.locator(f"[data-testid=job-entry][data-filename='{song}']")).to_have_count(1)


def test_a_fresh_browser_lists_the_jobs_the_server_holds(page: Any, suite: Suite, tmp_path: Path) -> None:
    api_job = job_made_through_the_api(suite, write_song(tmp_path / "made-by-api.wav", 5.0, seed=7))
    page.reload()
    entry = page.locator(f"[data-testid=job-entry][data-job-id='{api_job.job_id}']")
    expect(entry).to_have_attribute("data-state", "succeeded")
    expect(entry).to_have_attribute("data-filename", "made-by-api.wav")
    entry.locator("button").click()
    item = shown_item(page)
    expect(item.get_by_test_id("job-link")).to_have_attribute("href", f"#job={api_job.job_id}")
    expect(item.get_by_test_id("artifact-link")).to_have_count(len(api_job.artifacts))
    # Listed once, although the page now remembers it too.
    page.reload()
    expect(entry).to_have_count(1)


def test_a_job_url_opens_that_job_in_a_fresh_browser_with_a_key(
    browser: Any, keyed_suite: Suite, tmp_path: Path
) -> None:
    key = create_key(keyed_suite, "carol")
    api_job = job_made_through_the_api(keyed_suite, write_song(tmp_path / "shared.wav", 5.0, seed=5), key)

    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        opened = context.new_page()
        opened.goto(f"{keyed_suite.web_url}#job={api_job.job_id}")
        opened.get_by_test_id("key-input").fill(key)
        opened.get_by_test_id("key-submit").click()
        item = shown_item(opened)
        expect(item).to_have_attribute("data-job-id", api_job.job_id)
        expect(item.get_by_test_id("job-state")).to_have_attribute("data-state", "succeeded")
        for name in STAGES:
            expect(stage(item, name)).to_have_attribute("data-state", "done")
        links = item.get_by_test_id("artifact-link")
        expect(links).to_have_count(len(api_job.artifacts))
        names = {links.nth(i).get_attribute("data-name") for i in range(links.count())}
        assert names == {artifact.name for artifact in api_job.artifacts}
        # Listed once: ListJobs (once the key was given) and the link both brought it.
        expect(opened.get_by_test_id("job-entry")).to_have_count(1)
        # A job that is not there says so instead of showing nothing.
        opened.goto(f"{keyed_suite.web_url}#job=no-such-job")
        expect(opened.get_by_test_id("job-link-error")).to_contain_text("Cannot open job no-such-job")
    finally:
        context.close()


# Counts every oscillator the page starts (the sounds go through Web Audio) in the tab's
# sessionStorage, which a reload keeps: a call to an exposed binding made just before the page
# reloads can be lost on the way.
COUNT_OSCILLATORS = """
const start = OscillatorNode.prototype.start;
OscillatorNode.prototype.start = function (...args) {
  sessionStorage.setItem("oscillators", String(Number(sessionStorage.getItem("oscillators") ?? "0") + 1));
  return start.apply(this, args);
};
"""


def oscillators_started(page: Any) -> int:
    return int(page.evaluate("Number(sessionStorage.getItem('oscillators') ?? '0')"))


def test_stage_completions_play_sounds_once_when_turned_on(
    page: Any, browser: Any, suite: Suite, tmp_path: Path
) -> None:
    page.context.add_init_script(COUNT_OSCILLATORS)
    page.reload()
    page.evaluate("sessionStorage.removeItem('oscillators')")
    sounds = page.get_by_test_id("sounds-button")
    expect(sounds).to_have_attribute("aria-pressed", "false")
    sounds.click()
    expect(sounds).to_have_attribute("aria-pressed", "true")
    # Meanwhile a second browser with sounds left off (the default) runs a job too.
    quiet_context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        quiet_context.add_init_script(COUNT_OSCILLATORS)
        quiet = quiet_context.new_page()
        quiet.goto(suite.web_url)
        quiet_item = upload(quiet, write_song(tmp_path / "quiet.wav", 5.0, seed=9))
        quiet_item.get_by_test_id("process-button").click()

        item = upload(page, write_song(tmp_path / "chimes.wav", 12.0, seed=8))
        item.get_by_test_id("process-button").click()
        expect(stage(item, "separation")).to_have_attribute("data-state", "done", timeout=JOB_SECONDS)
        # A reload mid-job: the page re-attaches from the last event it saw; what it played before
        # the reload is not played again, and what happens after it is played once.
        job_id = item.get_attribute("data-job-id")
        page.reload()
        expect(sounds).to_have_attribute("aria-pressed", "true")
        page.locator(f"[data-testid=job-entry][data-job-id='{job_id}'] button").click()
        item = shown_item(page)
        expect(stage(item, "complete")).to_have_attribute("data-state", "done", timeout=JOB_SECONDS)
        assert item.locator("[data-stage][data-state=done]").count() == len(STAGES)
        after_reload = int(page.locator("body").get_attribute("data-sounds-played") or 0)
        assert after_reload < len(STAGES)  # separation's chime was before the reload
        page.wait_for_timeout(1000)
        assert oscillators_started(page) == 2 * len(STAGES)  # one two-note chime per stage done, in all

        expect(stage(quiet_item, "complete")).to_have_attribute("data-state", "done", timeout=JOB_SECONDS)
        assert quiet.locator("body").get_attribute("data-sounds-played") is None
        assert oscillators_started(quiet) == 0
    finally:
        quiet_context.close()

    # A finished job shown again after a reload plays nothing.
    page.reload()
    expect(page.locator(f"[data-testid=job-entry][data-job-id='{job_id}']")).to_have_attribute(
        "data-state", "succeeded"
    )
    page.wait_for_timeout(1000)
    assert page.locator("body").get_attribute("data-sounds-played") is None
    assert oscillators_started(page) == 2 * len(STAGES)

    # A job that fails (a listed model whose files are missing, see conftest) plays one falling tone.
    item = upload(page, write_song(tmp_path / "fails.wav", 3.0, seed=10))
    item.get_by_test_id("opt-separation-model").select_option("broken")
    item.get_by_test_id("process-button").click()
    expect(item.get_by_test_id("job-state")).to_have_attribute("data-state", "failed", timeout=JOB_SECONDS)
    expect(page.locator("body")).to_have_attribute("data-sounds-played", "1")
    page.wait_for_timeout(1000)
    assert oscillators_started(page) == 2 * len(STAGES) + 1
